"""A mixture of built-in tasks (``data.mixture``): the spec's one-line errors, rows drawn in
proportion and seeded, each naming its task, held-out rows per task, objectives scored per
task (checked against an evaluation of each task's rows alone), a weight sweep over the
mixture, and a run that trains a mixture with MFTCoder-style task balancing."""

from __future__ import annotations

from collections import Counter

import mlflow
import pytest

from tests.conftest import fast_spec
from workbench.data.mixture import mixture_counts
from workbench.data.sources import load_rows
from workbench.models.loading import load_base
from workbench.running.evaluation import evaluate
from workbench.running.pipeline import run
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import ObjectiveSpec, RunSpec
from workbench.studies.sweep import sweep_specs, swept_weights

MIX = {"reverse": 0.5, "sort": 0.3, "order": 0.2}


def test_a_mixture_spec_is_its_own_source_and_offers_each_tasks_objectives():
    spec = RunSpec.parse({"data": {"mixture": MIX, "train_size": 100}})
    assert spec.data.source == "mixture" and spec.method.name == "sft"
    assert [(o.name, o.source, o.task) for o in spec.objectives] == [
        ("exact_match/reverse", "metric:exact_match", "reverse"),
        ("exact_match/sort", "metric:exact_match", "sort"),
        ("correctness/order", "metric:prefix_accuracy", "order"),
        ("length/order", "metric:length_items", "order"),
    ]
    assert RunSpec.from_yaml(spec.to_yaml()) == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mixture": {"revers": 1.0}}, "data.mixture: unknown task 'revers'; allowed: arithmetic"),
        ({"mixture": {"reverse": -0.5, "sort": 1}}, "data.mixture: reverse: -0.5: a weight must"),
        ({"mixture": {"reverse": 0, "sort": 0.0}}, "the weights sum to 0; give at least one"),
        ({"mixture": {"reverse": "0.5"}}, "data.mixture: reverse: '0.5': a weight must be a num"),
        ({"mixture": {}}, "data.mixture: {}: must map built-in task names to weights"),
        ({"source": "sort", "mixture": MIX}, "data.source = 'sort' with data.mixture: a mixture"),
        ({"source": "mixture"}, "data.source = 'mixture' needs data.mixture"),
    ],
)
def test_a_bad_mixture_fails_in_one_line(data, message):
    with pytest.raises(SpecError, match=message) as err:
        RunSpec.parse({"data": data})
    assert len(str(err.value).splitlines()) == 2  # the heading and one line


def test_an_objective_is_scored_on_a_task_of_the_mixture_only():
    objective = {"name": "em", "direction": "max", "source": "metric:exact_match"}
    with pytest.raises(SpecError, match=r"objectives\[em\].task = 'order': an objective is scored"):
        RunSpec.parse(
            {"data": {"mixture": {"sort": 1}}, "objectives": [objective | {"task": "order"}]}
        )
    with pytest.raises(SpecError, match="data.mixture only; name one of them"):
        RunSpec.parse({"data": "sort", "objectives": [objective | {"task": "sort"}]})
    cost = {"name": "n", "direction": "min", "source": "cost:train_examples", "task": "sort"}
    with pytest.raises(SpecError, match="only metric: and reward: sources are scored per task"):
        RunSpec.parse({"data": {"mixture": {"sort": 1}}, "objectives": [cost]})


def test_mixture_counts_follow_the_weights_and_sum_to_the_total():
    assert mixture_counts({"a": 0.5, "b": 0.3, "c": 0.2}, 10) == {"a": 5, "b": 3, "c": 2}
    # Largest remainder: 7 * (1/3, 1/3, 1/3) = 2.33 each, the first named takes the spare row.
    assert mixture_counts({"a": 1, "b": 1, "c": 1}, 7) == {"a": 3, "b": 2, "c": 2}
    assert mixture_counts({"a": 2, "b": 0, "c": 1}, 9) == {"a": 6, "b": 0, "c": 3}
    for total in range(1, 40):
        assert sum(mixture_counts({"a": 0.37, "b": 0.21, "c": 1.3}, total).values()) == total


def test_mixture_rows_are_drawn_in_proportion_seeded_and_name_their_task():
    spec = RunSpec.parse(
        {"data": {"mixture": MIX | {"arithmetic": 0}, "train_size": 50, "eval_size": 6}}
    )
    train, held_out = load_rows(spec.data, seed=3)
    assert Counter(r.task for r in train) == {"reverse": 25, "sort": 15, "order": 10}
    # Each task's rows are that task's: its prompts start with its name (the tasks' prompts do).
    assert all(r.prompt.startswith(r.task) for r in train + held_out if r.task != "arithmetic")
    # Every task of the mixture, a weight-0 one too, brings eval_size held-out rows.
    assert Counter(r.task for r in held_out) == {t: 6 for t in [*MIX, "arithmetic"]}
    assert load_rows(spec.data, seed=3) == (train, held_out)
    other, _ = load_rows(spec.data, seed=4)
    assert [r.prompt for r in other] != [r.prompt for r in train]
    # Shuffled together, not one task after another.
    assert len({r.task for r in train[:10]}) > 1
    # Preference methods get the same mixture as pairs whose source rows name the task.
    pairs, _ = load_rows(spec.data, seed=3, row_kind="preference")
    assert [p.source.task for p in pairs] == [r.task for r in train]


def test_each_task_is_scored_on_its_own_rows():
    spec = RunSpec.parse(
        fast_spec(
            data={"source": "mixture", "mixture": {"reverse": 1, "sort": 1}, "eval_size": 6},
            eval={"max_new_tokens": 10, "batch_size": 1},  # one prompt at a time: no padding
        )
    )
    base = load_base(spec.model, log=lambda *a: None)
    _, held_out = load_rows(spec.data, 0)
    mixed = evaluate(base.model, base.tokenizer, held_out, spec.objectives, spec.eval)
    for task in ("reverse", "sort"):
        alone = evaluate(
            base.model,
            base.tokenizer,
            [r for r in held_out if r.task == task],
            [ObjectiveSpec(name="em", direction="max", source="metric:exact_match")],
            spec.eval,
        )
        assert mixed.objectives[f"exact_match/{task}"] == alone.objectives["em"]
        assert mixed.metrics[f"exact_match/{task}"] == alone.objectives["em"]
    both = (mixed.objectives["exact_match/reverse"] + mixed.objectives["exact_match/sort"]) / 2
    assert mixed.metrics["exact_match"] == pytest.approx(both)  # 6 rows each


def test_a_sweep_over_a_mixture_sets_the_mixture_weights():
    spec = RunSpec.parse({"data": {"mixture": MIX}})
    assert swept_weights(spec) == ["reverse", "sort", "order"]
    specs = sweep_specs(spec, [(0.8, 0.1, 0.1), (0.1, 0.1, 0.8)])
    assert [s.data.mixture for s in specs] == [
        {"reverse": 0.8, "sort": 0.1, "order": 0.1},
        {"reverse": 0.1, "sort": 0.1, "order": 0.8},
    ]
    assert specs[0].tracking.run_name == "reverse=0.8,sort=0.1,order=0.1"
    assert [o.name for o in specs[0].objectives] == [o.name for o in spec.objectives]
    assert sweep_specs(spec, [0.3])[0].data.mixture == {"reverse": 0.3, "sort": 0.7, "order": 0.2}
    with pytest.raises(SpecError, match=r"2 values for 3 tasks of data.mixture"):
        sweep_specs(spec, [(0.5, 0.5)])


def test_a_run_trains_a_balanced_mixture_and_logs_each_tasks_objectives(store_uri):
    spec = fast_spec(
        data={"source": "mixture", "mixture": {"reverse": 0.75, "sort": 0.25}, "train_size": 64},
        method={"name": "sft", "task_balance": "tokens"},
        train={"steps": 3, "batch_size": 8, "eval_every": 3},
        eval={"max_new_tokens": 10},
        tracking={"experiment": "tests", "log_model": False},
    )
    result = run(spec, log=lambda *a: None)
    assert set(result.objectives) == {"exact_match/reverse", "exact_match/sort"}
    stored = mlflow.MlflowClient(store_uri).get_run(result.run_id).data
    for task in ("reverse", "sort"):
        value = result.objectives[f"exact_match/{task}"]
        assert stored.metrics[f"objective/exact_match/{task}"] == value
        assert stored.metrics[f"eval/exact_match/{task}"] == value
    assert (stored.params["data.mixture.reverse"], stored.params["data.mixture.sort"]) == (
        "0.75",
        "0.25",
    )
    assert stored.params["method.task_balance"] == "tokens"
