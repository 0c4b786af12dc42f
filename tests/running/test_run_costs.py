"""Every run records its costs (trainable parameters, peak memory, training time, examples,
step time, tokens/s), declared as objectives or not, and a front of quality against any of
them builds from the finished runs, each cost in the direction it is better."""

from __future__ import annotations

import statistics

import pytest

import workbench
from tests.conftest import fast_spec
from workbench import tracking
from workbench.fronts.finished_runs import front_from_runs
from workbench.spec.run_spec import COST_SOURCES

HELDOUT_NLL = {"name": "heldout_nll", "direction": "min", "source": "term:completion"}


def _spec(adapter: dict, objectives: list[dict]) -> dict:
    return fast_spec(
        method="sft",
        adapter=adapter,
        data={"source": "reverse", "train_size": 32, "eval_size": 8},
        objectives=objectives,
        train={"steps": 4, "batch_size": 8, "eval_every": 4},
        eval={"max_new_tokens": 4, "samples_logged": 0},
        tracking={"experiment": "costs", "log_model": False},
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.conftest import own_store

    with own_store(tmp_path_factory, "costs") as uri:
        step_cost = {"name": "step_time", "direction": "min", "source": "cost:step_s"}
        results = {
            "full": workbench.run(
                _spec({"name": "full"}, [HELDOUT_NLL, step_cost]), log=lambda *a: None
            ),
            "lora": workbench.run(
                _spec({"name": "lora", "r": 2}, [HELDOUT_NLL]), log=lambda *a: None
            ),
        }
        yield uri, results, tracking.runs_frame(tracking.connect(uri), "costs")


def test_every_run_records_each_cost(finished):
    uri, results, runs = finished
    assert {r["run_id"] for r in runs} == {res.run_id for res in results.values()}
    by_id = {r["run_id"]: r for r in runs}
    for name, result in results.items():
        costs = by_id[result.run_id]["costs"]
        assert set(costs) == set(COST_SOURCES), (name, costs)
        assert costs["step_s"] > 0 and costs["tokens_per_s"] > 0
        assert costs["train_examples"] == 32
        # The run-level step time is the median of the logged steps after the first.
        history = tracking.metric_history(tracking.connect(uri), result.run_id, "perf/step_s")
        assert costs["step_s"] == pytest.approx(statistics.median(v for _, v in history[1:]))
    full, lora = (by_id[results[k].run_id]["costs"] for k in ("full", "lora"))
    assert 0 < lora["trainable_params"] < full["trainable_params"] / 10
    # Declared as an objective, the cost is the same figure the run's end recorded.
    assert results["full"].objectives["step_time"] == pytest.approx(full["step_s"])


def test_a_front_of_quality_against_any_cost_builds_for_runs_that_never_declared_it(finished):
    _, results, runs = finished
    for cost, direction in (("cost:trainable_params", "min"), ("cost:tokens_per_s", "max")):
        front = front_from_runs(runs, ["heldout_nll", cost])
        assert list(front.names) == ["heldout_nll", cost]
        assert list(front.directions) == ["min", direction]
        assert len(front.labels) == 2
    # Fewer trainable parameters: the LoRA run is on the front whatever its loss.
    front = front_from_runs(runs, ["heldout_nll", "cost:trainable_params"])
    lora_label = next(r["run_name"] for r in runs if r["run_id"] == results["lora"].run_id)
    on_front = {label for label, mask in zip(front.labels, front.mask) if mask}
    assert lora_label in on_front


def test_the_explorer_plots_quality_against_a_cost(finished):
    from workbench.widgets.explorer import ParetoExplorer

    uri, results, _ = finished
    explorer = ParetoExplorer("costs", uri=uri, names=["heldout_nll", "cost:trainable_params"])
    assert list(explorer.front.names) == ["heldout_nll", "cost:trainable_params"]
    assert list(explorer.front.directions) == ["min", "min"]
    assert {r["run_id"] for r in explorer.runs} == {res.run_id for res in results.values()}
