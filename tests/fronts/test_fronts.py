"""Fronts read back from MLflow (workbench/fronts/finished_runs.py, `workbench front`): each
objective's direction and reference come from the runs' own specs, `--objective` picks the
objectives, and the mistakes a user makes get one clear error. The front and its hypervolume are
checked against a brute-force computation written here."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from tests.conftest import fast_spec, own_store
from workbench import tracking
from workbench.cli.main import main
from workbench.fronts.finished_runs import front_from_runs, objective_declarations
from workbench.spec.errors import WorkbenchError
from workbench.spec.run_spec import RunSpec

OBJECTIVES = [
    {"name": "acc", "direction": "max", "source": "metric:exact_match", "reference": 0.0},
    {"name": "len", "direction": "min", "source": "metric:length_items", "reference": 20.0},
    {"name": "params", "direction": "min", "source": "cost:trainable_params"},  # no reference
]
# (acc, len, params) per run: b dominates d in (acc, len); a, b, c trade acc against len.
POINTS = {
    "a": (0.9, 15.0, 100.0),
    "b": (0.6, 8.0, 300.0),
    "c": (0.3, 4.0, 200.0),
    "d": (0.5, 9.0, 50.0),
}


def _finished_run(
    client, name: str, values: dict[str, float], experiment: str = "fronts", objectives=OBJECTIVES
) -> str:
    spec = RunSpec.parse(
        fast_spec(
            method="sft",
            objectives=objectives,
            tracking={"experiment": experiment, "run_name": name},
        )
    )
    run_id = tracking.start_run(client, spec)
    for key, value in values.items():
        client.log_metric(run_id, f"objective/{key}", value, step=10)
    tracking.end_run(client, run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with own_store(tmp_path_factory, "fronts-store") as uri:
        client = tracking.connect(uri)
        ids = {
            name: _finished_run(client, name, dict(zip(("acc", "len", "params"), point)))
            for name, point in POINTS.items()
        }
        # A run that logged only `acc`: it cannot stand on a front that needs `len`.
        ids["partial"] = _finished_run(client, "partial", {"acc": 0.99})
        _finished_run(
            client,
            "other",
            {"x": 1.0},
            experiment="unshared",
            objectives=[{"name": "x", "direction": "max", "source": "metric:exact_match"}],
        )
        _finished_run(
            client,
            "other2",
            {"y": 1.0},
            experiment="unshared",
            objectives=[{"name": "y", "direction": "max", "source": "metric:exact_match"}],
        )
        yield client, ids


def _runs(client, experiment="fronts"):
    return tracking.runs_frame(client, experiment)


def brute_force_front(points: dict[str, tuple], directions: list[str]) -> set[str]:
    sign = np.array([1.0 if d == "max" else -1.0 for d in directions])
    front = set()
    for name, p in points.items():
        p = np.array(p) * sign
        dominated = any(
            np.all(np.array(q) * sign >= p) and np.any(np.array(q) * sign > p)
            for other, q in points.items()
            if other != name
        )
        if not dominated:
            front.add(name)
    return front


def brute_force_hypervolume_2d(
    points: list[tuple], directions: list[str], reference: list[float]
) -> float:
    """Area dominated by ``points`` and bounded by ``reference``, on the grid of their
    coordinates: every cell of the grid is in or out."""
    sign = [1.0 if d == "max" else -1.0 for d in directions]
    pts = [[s * v for s, v in zip(sign, p)] for p in points]
    ref = [s * v for s, v in zip(sign, reference)]
    xs = sorted({ref[0], *(p[0] for p in pts)})
    ys = sorted({ref[1], *(p[1] for p in pts)})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(zip(xs, xs[1:]), zip(ys, ys[1:])):
        if any(p[0] >= x1 and p[1] >= y1 for p in pts):
            area += (x1 - x0) * (y1 - y0)
    return area


def test_directions_and_references_are_read_back_from_each_runs_spec(store):
    client, _ = store
    for run in _runs(client):
        decls = objective_declarations(run)
        assert decls == {
            "acc": {"direction": "max", "reference": 0.0, "weight": 1.0},
            "len": {"direction": "min", "reference": 20.0, "weight": 1.0},
            "params": {"direction": "min", "reference": None, "weight": 1.0},
        }


def test_the_front_over_chosen_objectives_matches_brute_force(store):
    client, ids = store
    front = front_from_runs(_runs(client), ["acc", "len"])
    assert list(front.names) == ["acc", "len"] and list(front.directions) == ["max", "min"]
    assert list(front.reference) == [0.0, 20.0]  # the runs' declared reference point
    labels = list(front.labels)
    assert "partial" not in labels and sorted(labels) == sorted(POINTS)  # lacking `len`: left out
    on_front = {label for label, keep in zip(labels, front.mask) if keep}
    two_d = {k: v[:2] for k, v in POINTS.items()}
    assert on_front == brute_force_front(two_d, ["max", "min"]) == {"a", "b", "c"}
    expected = brute_force_hypervolume_2d(list(two_d.values()), ["max", "min"], [0.0, 20.0])
    assert front.hypervolume == pytest.approx(expected)


def test_by_default_the_front_uses_every_objective_all_runs_share(store):
    client, _ = store
    complete = [r for r in _runs(client) if r["run_name"] != "partial"]
    front = front_from_runs(complete)
    assert list(front.names) == ["acc", "len", "params"]  # in the specs' order
    assert list(front.directions) == ["max", "min", "min"]
    on_front = {label for label, keep in zip(front.labels, front.mask) if keep}
    assert on_front == brute_force_front(POINTS, ["max", "min", "min"]) == {"a", "b", "c", "d"}
    # With the partial run, only `acc` is shared: the front of one objective is its best run.
    one = front_from_runs(_runs(client))
    assert list(one.names) == ["acc"]
    assert [label for label, keep in zip(one.labels, one.mask) if keep] == ["partial"]


def test_runs_that_share_no_objective_or_no_runs_are_clear_errors(store):
    client, _ = store
    with pytest.raises(WorkbenchError, match="share no objective; pass --objective"):
        front_from_runs(_runs(client, "unshared"))
    with pytest.raises(WorkbenchError, match="no finished runs"):
        front_from_runs([])


def test_front_command_takes_objectives_and_prints_the_brute_force_hypervolume(
    store, capsys, tmp_path
):
    client, ids = store
    html = tmp_path / "front.html"
    assert (
        main(
            [
                "front",
                "--experiment",
                "fronts",
                "--objective",
                "acc",
                "--objective",
                "len",
                "--html",
                str(html),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["label", "acc", "len", "run_id"]
    printed = {
        line.split()[0] for line in out.splitlines()[2:] if line and line.split()[0] in POINTS
    }
    assert printed == {"a", "b", "c"}  # the front's runs; d is dominated, partial lacks `len`
    assert ids["a"] in out
    hv = float(re.search(r"hypervolume: (\S+) \(reference \[0\.0, 20\.0\]\)", out)[1])
    two_d = [v[:2] for v in POINTS.values()]
    assert hv == pytest.approx(
        brute_force_hypervolume_2d(two_d, ["max", "min"], [0.0, 20.0]), rel=1e-3
    )
    assert html.is_file()


def test_front_command_with_an_objective_no_run_logged_is_a_clear_error(store, capsys, tmp_path):
    html = tmp_path / "front.html"
    assert (
        main(
            [
                "front",
                "--experiment",
                "fronts",
                "--objective",
                "acc",
                "--objective",
                "lenght",
                "--html",
                str(html),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "error: no run logged objective 'lenght'; the runs' objectives are: acc, len, params" in err
    )
    assert not html.exists()
