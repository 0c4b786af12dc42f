"""Weight sweeps over any number of objectives, the `explain` task, and sweeps stopped midway.

The end-to-end tests run `workbench sweep` as users do (a fresh interpreter) on the fast
tiny base with one torch thread per process, so a sweep run in one process and one run as
background processes must give the same numbers.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, interruptible, run_cli, sqlite_uri
from workbench import tracking
from workbench.data.tasks import METRICS, TASKS
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec
from workbench.studies.sweep import (
    grid_sizes,
    simplex_grid,
    simplex_random,
    sweep_specs,
    weight_grid,
)

# --------------------------------------------------------------------------- designs


@pytest.mark.parametrize("n, points", [(2, 5), (2, 2), (3, 3), (3, 6), (3, 10), (4, 10)])
def test_simplex_grid_points_are_on_the_simplex_and_distinct(n, points):
    grid = simplex_grid(n, points)
    assert len(grid) == points
    assert len(set(grid)) == points
    for w in grid:
        assert len(w) == n
        assert sum(w) == pytest.approx(1.0, abs=1e-9)
        assert min(w) >= 0.1 - 1e-9  # the interior: no term switched off


def test_simplex_grid_of_two_objectives_is_the_weight_grid():
    assert simplex_grid(2, 5) == [(w, round(1 - w, 4)) for w in weight_grid(5)]


def test_simplex_grid_names_the_sizes_it_has():
    assert grid_sizes(3, 15) == [3, 6, 10, 15]
    with pytest.raises(SpecError, match=r"3, 6, 10, 15.*random"):
        simplex_grid(3, 7)


def test_simplex_random_points_are_on_the_simplex_distinct_and_seeded():
    points = simplex_random(3, 8, seed=1)
    assert len(set(points)) == 8
    for w in points:
        assert sum(w) == pytest.approx(1.0, abs=1e-9) and min(w) >= 0.1 - 1e-9
    assert simplex_random(3, 8, seed=1) == points != simplex_random(3, 8, seed=2)


def test_sweep_specs_set_every_weighted_objective():
    spec = RunSpec.parse({"data": {"source": "explain"}})
    specs = sweep_specs(spec, [(0.8, 0.1, 0.1), (0.1, 0.1, 0.8)])
    assert [[o.weight for o in s.objectives] for s in specs] == [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]
    assert specs[0].tracking.run_name == "correctness=0.8,explanation=0.1,length=0.1"
    with pytest.raises(SpecError, match="2 values for 3 weighted objectives"):
        sweep_specs(spec, [(0.5, 0.5)])


def test_a_sweeps_children_are_named_after_their_weight_and_its_parent_keeps_a_given_name():
    from workbench.tracking.naming import study_run_name

    spec = RunSpec.parse({"data": {"source": "order"}, "tracking": {"run_name": "my sweep"}})
    assert [s.tracking.run_name for s in sweep_specs(spec, [0.7, 0.25])] == [
        "correctness=0.7",
        "correctness=0.25",
    ]
    assert study_run_name(spec, "sweep") == "my sweep"
    unnamed = spec.updated(**{"tracking.run_name": None})
    assert study_run_name(unnamed, "sweep") == "mo-sft order sweep"


# --------------------------------------------------------------------------- the explain task


def test_explain_task_scores_answer_explanation_and_length_separately():
    task = TASKS["explain"]
    row = task.heldout(1)[0]
    assert [name for name, _ in row.segments] == ["answer", "explanation"]
    digits = sorted(int(d) for d in row.prompt.removeprefix("explain ").rstrip(":").split())
    assert row.answer.split() == [str(d) for d in digits]

    def scores(text):
        return {
            m: METRICS[m](text, row) for m in ("answer_accuracy", "explanation_f1", "length_items")
        }

    full = scores(row.completion)
    assert full["answer_accuracy"] == 1.0 and full["explanation_f1"] == 1.0
    answer_only = scores(row.answer)
    assert answer_only["answer_accuracy"] == 1.0 and answer_only["explanation_f1"] == 0.0
    assert answer_only["length_items"] < full["length_items"]  # explaining costs brevity
    claims = row.completion.partition(":")[2].split()
    wrong = scores(
        row.answer + ": " + " ".join([f"{b}<{a}" for a, b in (c.split("<") for c in claims)])
    )
    assert wrong["explanation_f1"] == 0.0  # false claims earn nothing
    half = scores(row.answer + ": " + " ".join(claims + ["9<0"] * len(claims)))
    assert 0 < half["explanation_f1"] < 1  # a false claim among true ones costs precision


def test_explain_task_stays_out_of_the_tiny_base_corpus():
    from workbench.models.tiny import corpus_rows

    assert TASKS["explain"].pretrain is False
    prompts = {r.prompt.split()[0] for r in corpus_rows(0)}
    assert prompts == {"add", "reverse", "sort", "order"}


# --------------------------------------------------------------------------- end to end

POINTS = 6  # the 3-objective simplex grid with 2 divisions


def _sweep_spec(experiment: str) -> dict:
    # 60 steps at a high learning rate: enough for the fast base (which never saw the task in
    # pretraining) to start explaining, so the front has volume.
    return fast_spec(
        data={"source": "explain", "train_size": 400, "eval_size": 16},
        train={"steps": 60, "batch_size": 16, "eval_every": 60, "log_every": 1},
        optimizer={"lr": 0.006},
        eval={"max_new_tokens": 24, "samples_logged": 0},
        tracking={"experiment": experiment, "log_model": False},
    )


def _run_sweep_cli(folder, uri, experiment, parallel):
    path = folder / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(_sweep_spec(experiment)))
    started = time.monotonic()
    result = run_cli(
        "sweep",
        str(path),
        "--points",
        str(POINTS),
        "--parallel",
        str(parallel),
        "--no-progress",
        "--html",
        str(folder / f"{experiment}.html"),
        env={"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"},
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, time.monotonic() - started


def _sweep_runs(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("workbench.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("workbench.parent")]
    assert len(parents) == 1
    return parents[0], children


def _final_objectives(client, run, names):
    """Each objective's value at the run's last evaluation, from the metric history."""
    return [
        tracking.metric_history(client, run.info.run_id, f"objective/{n}")[-1][1] for n in names
    ]


@pytest.fixture(scope="module")
def fast_base():
    """The fast tiny base, built here once so that children started side by side load it."""
    from workbench.models.tiny import build_or_load

    build_or_load(RunSpec.parse(fast_spec()).model.tiny, log=lambda *a: None)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, fast_base):
    """The same 6-point 3-objective sweep, in one process and as 2 background processes."""
    folder = tmp_path_factory.mktemp("sweeps")
    uri = sqlite_uri(folder)
    here = _run_sweep_cli(folder, uri, "sweep-here", parallel=1)
    background = _run_sweep_cli(folder, uri, "sweep-background", parallel=2)
    return folder, uri, {"here": here, "background": background}


def brute_force_hypervolume(points, directions, reference):
    """Inclusion-exclusion over subsets of points: the union of the boxes each point
    dominates up to the reference (as minimisation), with no library."""
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    pts = [p * sign for p in np.asarray(points, dtype=float)]
    ref = np.asarray(reference, dtype=float) * sign
    pts = [p for p in pts if (p < ref).all()]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)  # the box all points of the subset dominate
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


def test_three_objective_sweep_hypervolume_matches_brute_force(sweeps):
    _, uri, outputs = sweeps
    client = MlflowClient(uri)
    parent, children = _sweep_runs(client, "sweep-background")
    assert parent.info.status == "FINISHED" and len(children) == POINTS
    assert all(c.info.status == "FINISHED" for c in children)
    spec = RunSpec.parse(_sweep_spec("sweep-background"))
    names = [o.name for o in spec.objectives]
    directions = [o.direction for o in spec.objectives]
    reference = [o.reference for o in spec.objectives]
    points = np.array([_final_objectives(client, c, names) for c in children])
    expected = brute_force_hypervolume(points, directions, reference)
    assert expected > 0  # some child beats the reference point in all three objectives
    assert parent.data.metrics["sweep/hypervolume"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    weights = {
        tuple(float(c.data.params[f"objectives.{n}.weight"]) for n in names) for c in children
    }
    assert weights == set(simplex_grid(3, POINTS))
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "front.json" in artifacts and "front" in artifacts
    front_size = parent.data.metrics["sweep/front_size"]
    assert 1 <= front_size <= POINTS and "sweep/base_hypervolume" in parent.data.metrics
    print(
        "sweep timings (s):",
        {k: round(v[1], 1) for k, v in outputs.items()},
        "hypervolume",
        round(expected, 4),
        "front size",
        front_size,
    )


def test_parallel_sweep_gives_the_same_front_as_one_at_a_time(sweeps):
    _, uri, _ = sweeps
    client = MlflowClient(uri)
    names = ["correctness", "explanation", "length"]
    fronts = {}
    for experiment in ("sweep-here", "sweep-background"):
        parent, children = _sweep_runs(client, experiment)
        values = {c.info.run_name: _final_objectives(client, c, names) for c in children}
        fronts[experiment] = (parent.data.metrics, values)
    (here_metrics, here), (bg_metrics, bg) = fronts["sweep-here"], fronts["sweep-background"]
    assert sorted(here) == sorted(bg) and len(here) == POINTS
    for name in here:
        assert bg[name] == pytest.approx(here[name], abs=1e-6), name
    for key in ("sweep/hypervolume", "sweep/base_hypervolume", "sweep/front_size"):
        assert bg_metrics[key] == pytest.approx(here_metrics[key], abs=1e-9), key


def test_sweep_over_term_objectives_in_this_process(store_uri, fast_base):
    """Objectives measured as held-out loss terms (term:<name>), swept through the Python API."""
    import workbench

    spec = RunSpec.parse(
        fast_spec(
            train={"steps": 4, "eval_every": 4},
            objectives=[
                {
                    "name": "answer_nll",
                    "direction": "min",
                    "source": "term:answer",
                    "term": "answer",
                    "reference": 20.0,
                },
                {
                    "name": "brevity_loss",
                    "direction": "min",
                    "source": "term:brevity",
                    "term": "brevity",
                    "reference": 20.0,
                },
            ],
            tracking={"experiment": "term-sweep", "log_model": False},
        )
    )
    result = workbench.run_sweep(spec, points=2, log=lambda *a: None)
    assert [r.status for r in result.runs] == ["FINISHED", "FINISHED"]
    assert result.weights == [(0.1, 0.9), (0.9, 0.1)]
    values = np.array(
        [[r.objectives["answer_nll"], r.objectives["brevity_loss"]] for r in result.runs]
    )
    assert np.isfinite(values).all() and result.front.names == ("answer_nll", "brevity_loss")
    np.testing.assert_allclose(result.front.points, values)
    client = MlflowClient(store_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["sweep/hypervolume"] == pytest.approx(
        brute_force_hypervolume(values, ["min", "min"], [20.0, 20.0])
    )
    # In MLflow (run name and its mlflow.runName tag) each child is named after its weight,
    # the parent after what it sweeps.
    for run, name in zip(
        result.runs, ["answer_nll=0.1,brevity_loss=0.9", "answer_nll=0.9,brevity_loss=0.1"]
    ):
        child = client.get_run(run.run_id)
        assert child.info.run_name == child.data.tags["mlflow.runName"] == name
    assert parent.info.run_name == "mo-sft order sweep"


# --------------------------------------------------------------------------- stopping


@pytest.mark.parametrize(
    "sig, parallel",
    [(signal.SIGTERM, 2), (signal.SIGINT, 1)],
    ids=["SIGTERM-background", "SIGINT-in-process"],
)
def test_stopping_a_sweep_leaves_no_run_running(tmp_path, sig, parallel, fast_base):
    uri = sqlite_uri(tmp_path)
    spec = _sweep_spec("stopped")
    spec["train"].update(steps=100_000, eval_every=100_000)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "sweep",
            str(path),
            "--points",
            "3",
            "--parallel",
            str(parallel),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    client = MlflowClient(uri)
    try:
        # Wait until as many children as may run at once exist (are RUNNING).
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            runs = tracking.runs_frame(client, "stopped", status="RUNNING")
            children = [r for r in runs if r["tags"].get("workbench.parent")]
            if len(children) >= parallel:
                break
            assert time.monotonic() < deadline, f"the children did not start within 120 s: {runs}"
            time.sleep(0.5)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    deadline = time.monotonic() + 30
    while (
        running := tracking.runs_frame(client, "stopped", status="RUNNING")
    ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running == [], (
        [(r["run_name"], r["tags"].get("workbench.parent")) for r in running],
        output[-3000:],
    )
    runs = tracking.runs_frame(client, "stopped", status=None)
    statuses = {r["run_name"]: r["status"] for r in runs}
    assert statuses.pop("mo-sft explain sweep") == "KILLED"  # the parent, named after its spec
    assert len(statuses) == parallel and set(statuses.values()) == {"KILLED"}, statuses
