"""workbench.fronts.plots: the figures show exactly the data in a ParetoFront.

Figures are inspected as data (traces and their coordinates); no browser needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.fronts.pareto import ParetoInputError, compute_front
from workbench.fronts.plots import (
    BASE,
    DOMINATED,
    FRONT,
    REFERENCE,
    REGION,
    curves_figure,
    flat_range,
    front_figure,
    overlap_groups,
    plotlyjs_file_name,
    point_text,
    text_positions,
    trajectory_figure,
    write_html,
)


def traces_by_name(fig):
    names = [t.name for t in fig.data]
    assert len(names) == len(set(names)), names
    return {t.name: t for t in fig.data}


@pytest.fixture
def front_2d():
    rng = np.random.default_rng(3)
    points = np.round(rng.uniform(size=(25, 2)), 2)
    points[5] = points[4]  # a duplicate, possibly on the front
    return compute_front(
        points,
        ["max", "min"],
        reference=[0.0, 1.0],
        names=["accuracy", "cost"],
        labels=[f"run-{i}" for i in range(25)],
    )


def test_front_figure_2d_traces(front_2d):
    fig = front_figure(front_2d)
    traces = traces_by_name(fig)
    assert set(traces) == {DOMINATED, FRONT, REFERENCE, REGION}
    front, dominated = traces[FRONT], traces[DOMINATED]

    # Every spot appears once (runs 4 and 5 share one); the highlighted ones are exactly the
    # non-dominated; each marker's hover lists every run at its spot.
    spots = {tuple(p) for p in front_2d.points.tolist()}
    assert len(front.x) + len(dominated.x) == len(spots) == len(front_2d.points) - 1
    assert sorted(zip(front.x, front.y, strict=True)) == sorted(
        {tuple(p) for p in front_2d.front_points.tolist()}
    )
    assert sorted(zip(dominated.x, dominated.y, strict=True)) == sorted(
        {tuple(p) for p in front_2d.points[~front_2d.mask].tolist()}
    )
    # Hover labels travel with their points; a click (customdata) finds a run at that spot.
    label_of = dict(zip(front_2d.labels, map(tuple, front_2d.points.tolist()), strict=True))
    listed = []
    for trace in (front, dominated):
        for hover, x, y, row in zip(
            trace.hovertext, trace.x, trace.y, trace.customdata, strict=True
        ):
            labels = hover.split("<br>")[1:] if "runs here" in hover else [hover]
            assert all(label_of[label] == (x, y) for label in labels)
            assert tuple(front_2d.points[row]) == (x, y)
            listed += labels
    assert sorted(listed) == sorted(front_2d.labels)
    shared = next(h for t in (front, dominated) for h in t.hovertext if "runs here" in h)
    assert shared == "2 runs here:<br>run-4<br>run-5"
    assert list(traces[REFERENCE].x) == [0.0] and list(traces[REFERENCE].y) == [1.0]
    assert fig.layout.xaxis.title.text == "accuracy (max)"
    assert fig.layout.yaxis.title.text == "cost (min)"
    assert "hypervolume" in fig.layout.title.text


def test_front_figure_2d_staircase(front_2d):
    front = traces_by_name(front_figure(front_2d))[FRONT]
    # Best accuracy (max) first, and along it cost (min) gets better: a monotone staircase.
    assert front.line.shape == "hv"
    assert list(front.x) == sorted(front.x, reverse=True)
    assert list(front.y) == sorted(front.y, reverse=True)


def test_region_polygon_area_equals_hypervolume(front_2d):
    region = traces_by_name(front_figure(front_2d))[REGION]
    x, y = np.asarray(region.x), np.asarray(region.y)
    shoelace = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert shoelace == pytest.approx(front_2d.hypervolume, rel=1e-9)


def test_front_figure_no_region_when_nothing_beats_reference():
    front = compute_front([[1.0, 1.0], [2.0, 0.5]], ["min", "min"], reference=[0.0, 0.0])
    traces = traces_by_name(front_figure(front, title="custom"))
    assert REGION not in traces and front.hypervolume == 0.0
    assert len(traces[FRONT].x) == 2


@pytest.mark.parametrize("k", [3, 4])
def test_front_figure_scatter_matrix(k):
    rng = np.random.default_rng(k)
    directions = ["min", "max", "min", "max"][:k]
    front = compute_front(rng.uniform(size=(30, k)), directions, names=list("abcd")[:k])
    traces = traces_by_name(front_figure(front))
    assert set(traces) == {DOMINATED, FRONT, REFERENCE}
    highlighted = traces[FRONT]
    assert highlighted.type == "splom"
    assert [d.label for d in highlighted.dimensions] == [
        f"{n} ({d})" for n, d in zip("abcd"[:k], directions, strict=True)
    ]
    np.testing.assert_array_equal(
        np.column_stack([d.values for d in highlighted.dimensions]), front.front_points
    )
    assert list(highlighted.hovertext) == list(front.front_labels)
    assert len(traces[DOMINATED].dimensions[0].values) == int((~front.mask).sum())


def test_front_figure_one_objective():
    front = compute_front([[3.0], [1.0], [1.0], [2.0]], ["min"], names=["loss"])
    traces = traces_by_name(front_figure(front))
    assert list(traces[FRONT].x) == [1.0, 1.0]
    assert list(traces[DOMINATED].x) == [3.0, 2.0]
    assert front_figure(front).layout.xaxis.title.text == "loss (min)"


def test_front_figure_no_runs():
    front = compute_front([], ["min", "max"])
    traces = traces_by_name(front_figure(front))
    assert len(traces[FRONT].x) == 0 and len(traces[DOMINATED].x) == 0
    assert REFERENCE not in traces


def test_trajectory_figure():
    trajectories = {
        "run-a": [(20, {"acc": 0.7, "cost": 2.0}), (10, {"acc": 0.5, "cost": 1.0})],
        "run-b": [
            (10, {"acc": 0.4, "cost": 1.5}),
            (20, {"acc": 0.6}),  # cost not logged at this evaluation: skipped
            (30, {"acc": float("nan"), "cost": 1.0}),  # non-finite: skipped
            (40, {"acc": 0.8, "cost": 1.2}),
        ],
        "run-c": [],  # no evaluations yet: no trace
    }
    fig = trajectory_figure(trajectories, ["acc", "cost"], directions=["max", "min"])
    traces = traces_by_name(fig)
    assert set(traces) == {"run-a", "run-b"}
    assert list(traces["run-a"].x) == [0.5, 0.7]  # step order, not input order
    assert list(traces["run-a"].y) == [1.0, 2.0]
    assert list(traces["run-b"].x) == [0.4, 0.8]
    assert list(traces["run-b"].hovertext) == ["run-b step 10", "run-b step 40"]
    assert fig.layout.xaxis.title.text == "acc (max)"
    assert fig.layout.yaxis.title.text == "cost (min)"


def test_trajectory_figure_needs_two_names():
    with pytest.raises(ParetoInputError, match="two objectives"):
        trajectory_figure({}, ["acc"])
    with pytest.raises(ParetoInputError, match="'min' or 'max'"):
        trajectory_figure({}, ["acc", "cost"], directions=["up", "min"])


def test_curves_figure_draws_each_run_in_step_order():
    curves = {
        "kernels=off": [(3, 0.5), (1, 0.9), (2, 0.7)],
        "kernels=torch": [(1, 0.9), (2, float("nan")), (3, 0.4)],
    }
    fig = curves_figure(curves, "train/loss")
    assert [t.name for t in fig.data] == ["kernels=off", "kernels=torch"]
    off, fused = fig.data
    assert list(off.x) == [1, 2, 3] and list(off.y) == [0.9, 0.7, 0.5]
    assert list(fused.x) == [1, 3] and list(fused.y) == [0.9, 0.4]  # NaN left out
    assert fig.layout.xaxis.title.text == "step" and fig.layout.yaxis.title.text == "train/loss"


def test_write_html_writes_plotly_beside_the_page_once(tmp_path, front_2d):
    folder = tmp_path / "figures"
    page = write_html(front_figure(front_2d), folder / "front.html")
    other = write_html(front_figure(front_2d, title="again"), folder / "other.html")
    bundle = folder / plotlyjs_file_name()
    # The page loads plotly.js from its folder (offline), never from a CDN; the bundle is
    # written once and shared by every page there.
    html = page.read_text(encoding="utf-8")
    assert f'src="{bundle.name}"' in html and "cdn" not in html.lower()
    assert len(html) < 100_000 and "run-0" in html
    assert bundle.stat().st_size > 1_000_000 and "plotly.js v" in bundle.read_text()[:200]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [bundle.name, "front.html", "other.html"]
    )
    assert other.stat().st_size < 100_000


def test_write_html_embedded_stands_alone(tmp_path, front_2d):
    path = write_html(front_figure(front_2d), tmp_path / "front.html", plotlyjs="embed")
    html = path.read_text(encoding="utf-8")
    # plotly.js is inlined (its bundle is megabytes), and no script is fetched at all.
    assert len(html) > 1_000_000
    assert "plotly.js v" in html
    assert "<script src=" not in html and 'src="https://cdn' not in html
    assert [p.name for p in tmp_path.iterdir()] == ["front.html"]
    with pytest.raises(ValueError, match="plotlyjs='cdn' must be one of"):
        write_html(front_figure(front_2d), tmp_path / "x.html", plotlyjs="cdn")


def test_overlapping_runs_are_counted_and_labelled():
    points = np.array([[0.5, 3.0], [0.5, 3.0], [0.9, 5.0], [0.5, 3.0000000000001], [0.2, 1.0]])
    assert overlap_groups(points) == [[0, 1, 3], [2], [4]]
    assert overlap_groups(points, [2, 3, 1]) == [[2], [3, 1]]
    assert point_text(["correctness=0.7"]) == "correctness=0.7"
    assert point_text(["correctness=0.7", "correctness=0.7"]) == "correctness=0.7 ×2"
    assert point_text(["a", "b"]) == "a, b"
    assert point_text(["correctness=0.7", "correctness=0.9", "correctness=0.1"]) == (
        "correctness=0.7 +2 more"
    )
    points[3] = points[0]  # exactly: near-equal values may differ in dominance
    front = compute_front(
        points,
        ["max", "min"],
        reference=[0.0, 10.0],
        names=["c", "n"],
        labels=["w=0.5", "w=0.5", "w=0.9", "w=0.5", "w=0.1"],
    )
    fig = front_figure(front, base={"c": 0.1, "n": 2.0})
    traces = traces_by_name(fig)
    drawn = [*traces[FRONT].text, *traces[DOMINATED].text]
    assert sorted(drawn) == sorted(["w=0.5 ×3", "w=0.9", "w=0.1"])
    assert max(traces[FRONT].marker.size) > min(
        traces[FRONT].marker.size
    )  # a shared spot is larger
    base = traces[BASE]
    assert (list(base.x), list(base.y), list(base.text)) == ([0.1], [2.0], ["base model"])
    # Many spots: labels would cover each other, so hover only (unless asked for).
    many = compute_front(
        np.random.default_rng(0).uniform(size=(30, 2)),
        ["max", "max"],
        labels=[f"r{i}" for i in range(30)],
    )
    assert all(t.text is None for t in front_figure(many).data)
    assert traces_by_name(front_figure(many, point_labels=True))[FRONT].text is not None
    # Beyond two objectives the base model is a point of the scatter matrix too.
    three = compute_front(
        np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [2.0, 1.0, 0.0]]),
        ["max", "max", "max"],
        names=["x", "y", "z"],
        labels=["a", "b", "c"],
    )
    fig3 = front_figure(three, base={"x": 0.0, "y": 0.0, "z": 0.0})
    assert BASE in {t.name for t in fig3.data}
    assert sum(len(t.customdata) for t in fig3.data if t.name in (FRONT, DOMINATED)) == 2


def test_labels_stay_inside_and_flat_lines_sit_at_their_value():
    points = np.array([[0.0, 0.0], [0.5, 5.0], [1.0, 10.0]])
    assert text_positions(points, points) == ["top right", "top center", "bottom left"]
    # A constant learning rate is drawn at its value, not as a line at 0 in a +-1 range.
    assert flat_range([3e-4, 3e-4, 3e-4]) == pytest.approx([1.5e-4, 4.5e-4])
    assert flat_range([0.0, 0.0]) == [-1.0, 1.0]
    assert flat_range([-2.0, -2.0]) == [-3.0, -1.0]
    assert flat_range([1.0, 2.0]) is None and flat_range([]) is None
