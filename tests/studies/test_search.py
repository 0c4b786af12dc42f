"""Multi-objective search with Optuna: the space, the pruning rule, and a study shared by two
worker processes through one sqlite Optuna storage, read back from MLflow and from Optuna."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec
from tests.studies.test_sweeps import brute_force_hypervolume
from workbench import tracking
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec
from workbench.studies.search import (
    PruneQuery,
    SearchSettings,
    apply_params,
    check_space,
    load_config,
    make_sampler,
    parse_settings,
    prune_dominated,
    suggest,
    trial_run_name,
)

OBJECTIVES = [
    # Reference -1: a few steps leave the fast base at correctness 0, and the front must have
    # volume.
    {
        "name": "correctness",
        "direction": "max",
        "source": "metric:prefix_accuracy",
        "term": "answer",
        "weight": 0.5,
        "reference": -1.0,
    },
    {
        "name": "length",
        "direction": "min",
        "source": "metric:length_items",
        "term": "brevity",
        "weight": 0.5,
        "reference": 14.0,
    },
    # AutoPEFT-style: the adapter's size is an objective of its own.
    {"name": "params", "direction": "min", "source": "cost:trainable_params", "reference": 1e6},
]
SPACE = {
    "objectives.correctness.weight": {"low": 0.1, "high": 0.9},
    "adapter.r": {"choices": [2, 4, 8]},
    "optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True},
}


def _spec(**sections) -> RunSpec:
    return RunSpec.parse(
        fast_spec(
            method="mo-sft", adapter={"name": "lora", "r": 4}, objectives=OBJECTIVES, **sections
        )
    )


# --------------------------------------------------------------------------- the space


@pytest.mark.parametrize(
    "space, message",
    [
        ({"adapter.rank": {"choices": [2, 4]}}, "search.space.adapter.rank = 2: not a valid value"),
        (
            {"adapter.r": {"low": 0, "high": 8}},
            "adapter.r = 0: Input should be greater than or equal to 1",
        ),
        (
            {"objectives.params.weight": {"low": 0.1, "high": 0.9}},
            "objective 'params' has no loss term",
        ),
        (
            {"objectives.speed.weight": {"low": 0.1, "high": 0.9}},
            "names: correctness, length, params",
        ),
        ({"optimizer.lr": {"low": 0.01, "high": 0.001}}, "low (0.01) must be below high (0.001)"),
        ({"optimizer.lr": {"low": 0, "high": 0.1, "log": True}}, "a log scale needs low > 0"),
        ({"adapter.r": {"choices": [2], "low": 1}}, "give either choices or low/high"),
    ],
)
def test_a_bad_space_names_the_field_the_value_and_what_is_allowed(space, message):
    with pytest.raises(SpecError, match=None) as err:
        check_space(_spec(), parse_settings({"space": space}))
    assert message in str(err.value)


def test_unknown_settings_are_named():
    with pytest.raises(SpecError) as err:
        parse_settings({"space": SPACE, "sampler": "tpe", "popsize": 4, "pruning": "dominatd"})
    assert "search.sampler = 'tpe'" in str(err.value)
    assert "search.pruning = 'dominatd': unknown rule; allowed: dominated, none" in str(err.value)
    assert "search.popsize = 4: unknown field" in str(err.value)


def test_sampled_params_make_valid_specs_of_the_right_types():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = _spec()
    settings = parse_settings({"space": {**SPACE, "train.steps": {"low": 2, "high": 6, "step": 2}}})
    for sampler in ("nsga2", "gp"):
        chosen = settings.model_copy(update={"sampler": sampler, "startup_trials": 2})
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=make_sampler(chosen)
        )
        assert (
            type(study.sampler).__name__ == {"nsga2": "NSGAIISampler", "gp": "GPSampler"}[sampler]
        )
        for _ in range(4):  # past the GP's random start-up trials
            trial = study.ask()
            params = suggest(trial, spec, chosen.space)
            trial_spec = apply_params(spec, params)
            assert (
                isinstance(params["adapter.r"], int) and trial_spec.adapter.r == params["adapter.r"]
            )
            assert isinstance(params["train.steps"], int) and params["train.steps"] in (2, 4, 6)
            assert 1e-3 <= trial_spec.optimizer.lr <= 1e-2
            assert (
                trial_spec.objective("correctness").weight
                == params["objectives.correctness.weight"]
            )
            assert trial_spec.objective("length").weight == 0.5  # the others keep theirs
            study.tell(trial, [params["optimizer.lr"], float(params["adapter.r"])])


def test_a_study_config_is_a_spec_with_a_search_section(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({**fast_spec(adapter={"name": "lora"}), "search": {"space": SPACE}})
    )
    spec, settings = load_config(
        path, **{"train.steps": 3, "search.sampler": "gp", "search.study": None}
    )
    assert spec.train.steps == 3 and settings.sampler == "gp" and settings.pruning == "dominated"
    assert isinstance(settings, SearchSettings) and sorted(settings.space) == sorted(SPACE)
    path.write_text(yaml.safe_dump(fast_spec()))
    with pytest.raises(SpecError, match="has no search section"):
        load_config(path)


def test_the_search_command_explains_itself(capsys):
    from workbench.cli.main import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["search", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "workbench search" in out and "--workers" in out and "study/hypervolume" in out


def test_the_readme_study_config_is_valid(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"```yaml study-config\n(.*?)```", readme, re.S)
    assert len(examples) == 1, "README.md has no study config example"
    path = tmp_path / "study.yaml"
    path.write_text(examples[0])
    spec, settings = load_config(path)
    assert [o.name for o in spec.objectives] == ["correctness", "length", "params"]
    assert settings.sampler == "nsga2" and len(settings.space) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "0"], "trials = 0: a search needs at least 1 trial"),
        (
            ["--trials", "2", "--storage", "not a url"],
            "search.storage = 'not a url': not a database URL",
        ),
        (["--trials", "2", "--steps", "0"], "train.steps = 0"),
    ],
)
def test_a_bad_search_is_answered_before_any_heavy_import(tmp_path, args, message):
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({**fast_spec(adapter={"name": "lora"}), "search": {"space": SPACE}})
    )
    code = textwrap.dedent(f"""
        import sys
        from workbench.cli.main import main
        rc = main(["search", {str(path)!r}, *{args!r}])
        heavy = ("torch", "transformers", "lightning", "mlflow", "optuna")
        print("imported:", sorted(m for m in heavy if m in sys.modules))
        sys.exit(rc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "imported: []" in done.stdout


# --------------------------------------------------------------------------- pruning


def test_the_dominated_rule_prunes_only_a_point_a_completed_trial_beats_at_that_step():
    directions = {"correctness": "max", "length": "min"}
    completed = {
        0: {3: {"correctness": 0.5, "length": 4.0}, 6: {"correctness": 0.9, "length": 3.0}}
    }

    def rule(step, correctness, length):
        return prune_dominated(
            PruneQuery(
                5, step, {"correctness": correctness, "length": length}, directions, completed
            )
        )

    assert "dominated by completed trial 0 at step 3" in rule(3, 0.4, 5.0)
    assert rule(3, 0.4, 4.0) is not None  # equal in one, worse in the other
    assert rule(3, 0.5, 4.0) is None  # equal is not dominated
    assert rule(3, 0.6, 5.0) is None  # better in one objective: a trade-off, kept
    assert rule(4, 0.0, 99.0) is None  # no completed point at this step
    assert rule(6, 0.8, 3.5) is not None
    assert rule(3, float("nan"), 1.0) is not None


def keep_two_trials(query: PruneQuery) -> str | None:
    """The end-to-end test's rule: trials 0 and 1 complete, every later one is pruned at its
    first evaluation after the base model's (deterministic, whatever the objectives)."""
    return "the test keeps trials 0 and 1 only" if query.trial_number >= 2 else None


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def fast_base():
    """The fast tiny base, built once here so that the two workers load it side by side."""
    from workbench.models.tiny import build_or_load

    build_or_load(RunSpec.parse(fast_spec()).model.tiny, log=lambda *a: None)


def test_two_workers_share_one_study_and_every_trial_is_a_child_run(
    store_uri, fast_base, monkeypatch
):
    import optuna

    import workbench

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = _spec(
        train={"steps": 6, "eval_every": 3, "batch_size": 8, "log_every": 1},
        tracking={"experiment": "search", "log_model": False},
    )
    settings = {"space": SPACE, "pruning": f"{__name__}:keep_two_trials", "seed": 0}
    started = time.monotonic()
    result = workbench.run_search(spec, settings, trials=4, workers=2, log=lambda *a: None)
    elapsed = time.monotonic() - started

    # Optuna: 2 completed, 2 pruned, none RUNNING, run by two worker processes (2 trials each).
    storage = f"sqlite:///{store_uri[len('sqlite:///') :].rsplit('/', 1)[0]}/optuna.db"
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "PRUNED"}
    pids = [t.user_attrs["worker_process"]["workbench.pid"] for t in study.trials]
    assert len(set(pids)) == 2 and all(pids.count(p) == 2 for p in pids)
    assert [o.state for o in result.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]

    # MLflow: every trial is a child of the parent, named and tagged by its number, with the
    # sampled values in its spec params; pruned ones KILLED with the reason, none RUNNING.
    client = MlflowClient(store_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["workbench.kind"] == "study" and parent.info.status == "FINISHED"
    assert parent.data.tags["workbench.study"] == result.study_name
    children = tracking.runs_frame(
        client, "search", parent_run_id=result.parent_run_id, status=None
    )
    assert len(children) == 4
    by_trial = {int(r["tags"]["workbench.trial"]): r for r in children}
    assert tracking.runs_frame(client, "search", status="RUNNING") == []
    for trial in study.trials:
        run = by_trial[trial.number]
        assert run["run_id"] == trial.user_attrs["mlflow_run_id"]
        # Named after its sampled values, then its number (search.trial_run_name).
        assert run["run_name"] == trial_run_name(trial.number, trial.params)
        assert (
            run["run_name"].endswith(f" (trial {trial.number})") and "adapter.r=" in run["run_name"]
        )
        assert run["tags"]["workbench.study"] == result.study_name
        assert int(run["params"]["adapter.r"]) == trial.params["adapter.r"]
        assert float(run["params"]["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert float(run["params"]["objectives.correctness.weight"]) == pytest.approx(
            trial.params["objectives.correctness.weight"]
        )
        steps = [
            s for s, _ in tracking.metric_history(client, run["run_id"], "objective/correctness")
        ]
        if trial.state.name == "PRUNED":
            assert run["status"] == "KILLED"
            assert "pruned by" in run["tags"]["workbench.error"]
            assert "the test keeps trials 0 and 1 only" in run["tags"]["workbench.error"]
            assert steps == [0, 3]  # stopped at its first evaluation after the base
        else:
            assert run["status"] == "FINISHED" and steps == [0, 3, 6]
            assert [
                run["objectives"][n] for n in ("correctness", "length", "params")
            ] == pytest.approx(trial.values)
            assert run["objectives"]["params"] == pytest.approx(
                run["metrics"]["cost/trainable_params"]
            )

    # The parent's front: the completed trials' points, its hypervolume recomputed by brute force.
    done = [by_trial[n] for n in (0, 1)]
    points = np.array(
        [[r["objectives"][n] for n in ("correctness", "length", "params")] for r in done]
    )
    expected = brute_force_hypervolume(points, ["max", "min", "min"], [-1.0, 14.0, 1e6])
    assert expected > 0
    metrics = parent.data.metrics
    assert metrics["study/hypervolume"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert result.front.hypervolume == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 1 <= metrics["study/front_size"] <= 2 and "study/base_hypervolume" in metrics
    assert metrics["study/pruned_trials"] == 2 and metrics["study/completed_trials"] == 2
    artifacts = [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert {"front.json", "front", "search.yaml"} <= set(artifacts)
    print(
        f"search: 4 trials on 2 workers in {elapsed:.1f} s; hypervolume {expected:.6g}; "
        f"points {points.tolist()}"
    )


def test_a_search_in_this_process_with_the_gp_sampler_and_the_dominated_rule(
    store_uri, fast_base, monkeypatch
):
    """workers=1: the trials train in this process; whatever the rule prunes ends KILLED and
    PRUNED with a reason naming the completed trial that dominated it, the rest FINISHED."""
    import workbench

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = _spec(
        train={"steps": 4, "eval_every": 2, "batch_size": 8, "log_every": 1},
        tracking={"experiment": "search-here", "log_model": False},
    )
    started = time.monotonic()
    result = workbench.run_search(
        spec, {"space": SPACE, "sampler": "gp", "startup_trials": 2}, trials=3, log=lambda *a: None
    )
    elapsed = time.monotonic() - started
    client = MlflowClient(store_uri)
    runs = {
        r["run_id"]: r
        for r in tracking.runs_frame(client, "search-here", status=None)
        if r["tags"].get("workbench.parent") == result.parent_run_id
    }
    assert len(result.trials) == len(runs) == 3
    for trial in result.trials:
        run = runs[trial.run_id]
        assert trial.state in ("COMPLETE", "PRUNED"), trial
        if trial.state == "PRUNED":
            assert (
                run["status"] == "KILLED"
                and "dominated by completed trial" in run["tags"]["workbench.error"]
            )
        else:
            assert run["status"] == "FINISHED"
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["workbench.sampler"] == "gp"
    assert parent.data.metrics["study/hypervolume"] == pytest.approx(result.front.hypervolume)
    print(f"search in process: {[t.state for t in result.trials]} in {elapsed:.1f} s")
