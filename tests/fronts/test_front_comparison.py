"""Several fronts on one figure, and settings repeated over seeds with their spread."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from workbench.fronts.comparison import fronts_figure, seed_spread, seed_spread_figure
from workbench.fronts.pareto import ParetoInputError, compute_front


def _front(points, labels):
    return compute_front(
        np.array(points, dtype=float),
        ["max", "min"],
        reference=[0.0, 20.0],
        names=["correctness", "length"],
        labels=labels,
    )


def test_each_front_is_its_own_staircase_with_its_hypervolume():
    sweep = _front([[0.2, 3.0], [0.6, 8.0], [0.5, 9.0], [0.9, 14.0]], ["w0", "w1", "w2", "w3"])
    merged = _front([[0.4, 5.0], [0.8, 10.0]], ["c0.3", "c0.7"])
    figure = fronts_figure({"sweep": sweep, "merge grid": merged})
    assert len(figure.data) == 2
    drawn_sweep, drawn_merge = figure.data
    # Only non-dominated points, best correctness first (w2 is dominated by w1).
    assert list(zip(drawn_sweep.x, drawn_sweep.y)) == [(0.9, 14.0), (0.6, 8.0), (0.2, 3.0)]
    assert list(drawn_sweep.hovertext) == ["sweep: w3", "sweep: w1", "sweep: w0"]
    assert list(zip(drawn_merge.x, drawn_merge.y)) == [(0.8, 10.0), (0.4, 5.0)]
    assert drawn_sweep.name == f"sweep (hypervolume {sweep.hypervolume:.4g})"
    assert drawn_merge.line.shape == "hv" and drawn_merge.line.color != drawn_sweep.line.color
    assert figure.layout.xaxis.title.text == "correctness (max)"


def test_fronts_over_different_objectives_are_refused():
    a = _front([[0.2, 3.0]], ["a"])
    b = compute_front(
        np.array([[0.2, 3.0]]), ["max", "max"], names=["correctness", "length"], labels=["b"]
    )
    with pytest.raises(ParetoInputError, match="front 'b' is over"):
        fronts_figure({"a": a, "b": b})
    with pytest.raises(ParetoInputError, match="no fronts"):
        fronts_figure({})


def test_seed_spread_is_the_mean_and_sample_std_over_seeds():
    values = [[0.81, 0.76], [0.70, 0.80], [0.77, 0.71]]
    mean, std = seed_spread(values)
    for j in range(2):
        column = [row[j] for row in values]
        assert mean[j] == pytest.approx(statistics.mean(column))
        assert std[j] == pytest.approx(statistics.stdev(column))
    assert seed_spread([[1.0, 2.0]])[1].tolist() == [0.0, 0.0]
    figure = seed_spread_figure(
        {"(1, 0)": values, "(0, 1)": [[0.0, 1.0], [0.02, 0.98]]},
        ["correct", "brevity"],
        ["max", "max"],
    )
    first = figure.data[0]
    assert first.name == "(1, 0) (3 seeds)"
    assert first.x[0] == pytest.approx(mean[0]) and first.error_x.array[0] == pytest.approx(std[0])
    assert first.error_y.array[0] == pytest.approx(std[1])
    with pytest.raises(ParetoInputError, match="expected 2"):
        seed_spread_figure({"x": [[1.0, 2.0, 3.0]]}, ["a", "b"], ["max", "max"])
