"""`workbench merge` end to end: two short runs (one full, one LoRA) merged, evaluated and
recorded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, run_cli
from workbench import tracking
from workbench.fronts import finished_runs as fronts
from workbench.running.pipeline import run


@pytest.mark.slow
def test_workbench_merge_records_merged_models_as_points_on_the_front(store_uri, tmp_path):
    quiet = {"log": lambda *a: None}
    clock = [time.perf_counter()]

    def lap(what):
        clock.append(time.perf_counter())
        print(f"{what}: {clock[-1] - clock[-2]:.1f} s")

    train = {"steps": 6, "eval_every": 6}
    full = run(
        fast_spec(train=train, optimizer={"lr": 1e-3}, tracking={"run_name": "full"}), **quiet
    )
    lora = run(
        fast_spec(
            train=train,
            adapter={"name": "lora", "r": 4},
            optimizer={"lr": 1e-2},
            tracking={"run_name": "lora"},
        ),
        **quiet,
    )

    lap("two runs")
    done = run_cli(
        "merge",
        full.run_id,
        lora.run_id,
        "--method",
        "ties",
        "--weights",
        "0.6",
        "0.4",
        "--density",
        "0.5",
        "--name",
        "ties-merge",
        timeout=300,
    )
    lap("workbench merge")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(store_uri)
    merged = [r for r in tracking.runs_frame(client, "tests") if r["run_name"] == "ties-merge"]
    assert len(merged) == 1, done.stdout
    merged = merged[0]
    assert merged["run_id"] in done.stdout
    assert set(merged["objectives"]) == {"correctness", "length"}
    assert merged["tags"]["workbench.kind"] == "evaluation"
    assert merged["tags"]["workbench.merge"] == "ties"
    assert merged["tags"]["workbench.merge.sources"] == f"{full.run_id},{lora.run_id}"
    params = merged["params"]
    assert (params["merge.method"], params["merge.weights"], params["merge.density"]) == (
        "ties",
        "0.6,0.4",
        "0.5",
    )
    assert params["merge.majority_sign_method"] == "total"
    assert params["merge.source_kinds"] == "full,lora"
    assert params["adapter.name"] == "full"
    assert "model/model.safetensors" in {
        f.path for f in client.list_artifacts(merged["run_id"], "model")
    }

    # The front over the experiment holds the merged run beside the trained ones.
    shown = run_cli(
        "front", "--experiment", "tests", "--html", str(tmp_path / "front.html"), timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    front = fronts.front_from_runs(tracking.runs_frame(client, "tests"))
    assert sorted(front.labels) == ["full", "lora", "ties-merge"]
    on_front = [label for label, on in zip(front.labels, front.mask) if on]
    assert all(label in shown.stdout for label in on_front), shown.stdout

    # A grid of coefficients from Python: one point per coefficient under one parent.
    from workbench.merging.runs import merge_grid, merge_runs

    lap("workbench front")
    grid = merge_grid(full.run_id, lora.run_id, [0.0, 1.0], "linear", **quiet)
    lap("grid of 2")
    children = tracking.runs_frame(client, "tests", parent_run_id=grid.parent_run_id)
    assert sorted(c["params"]["merge.coefficient"] for c in children) == ["0", "1"]
    parent = client.get_run(grid.parent_run_id)
    assert parent.data.tags["workbench.kind"] == "sweep"
    assert parent.data.metrics["sweep/front_size"] >= 1
    assert "sweep/hypervolume" in parent.data.metrics
    # c = 1 is the LoRA run's model itself: the same objectives as its final evaluation.
    at_one = next(r for r in grid.runs if r.coefficient == 1.0)
    for name, value in lora.objectives.items():
        assert at_one.objectives[name] == pytest.approx(value, abs=1e-6), name

    # AdaMerging from Python: the learned merge is recorded with its entropies.
    learned = merge_runs([full.run_id, lora.run_id], "adamerging", adamerging_steps=3, **quiet)
    lap("adamerging, 3 steps")
    stored = client.get_run(learned.run_id).data
    assert {"merge/entropy_initial", "merge/entropy_final"} <= set(stored.metrics)
    assert {"objective/correctness", "objective/length"} <= set(stored.metrics)
    assert stored.params["merge.adamerging_steps"] == "3" and "merge.weights" not in stored.params


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["a", "b", "--method", "tie"],
            "merge.method = 'tie': unknown; allowed: linear, task_arithmetic",
        ),
        (["a", "b", "--weights", "1"], "merge.weights = [1.0]: 1 values for 2 models"),
        (["a", "b", "--method", "ties", "--density", "0"], "merge.density = 0: must be in (0, 1]"),
        (["a", "b", "c", "--grid", "0", "1"], "--grid interpolates between exactly two runs"),
    ],
)
def test_a_bad_merge_is_answered_before_any_heavy_import(args, message):
    code = textwrap.dedent(f"""
        import sys
        from workbench.cli.main import main
        rc = main(["merge", *{args!r}])
        print("imported:", sorted(m for m in ("torch", "transformers", "lightning", "mlflow")
                                  if m in sys.modules))
        sys.exit(rc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "imported: []" in done.stdout
