"""Preference weights over finished runs: re-ranking and weighted-sum reachability, each
checked against a brute-force computation written independently here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.fronts import pareto


def _brute_scores(points, directions, weights, scalarisation):
    # Plain loops: flip maximised columns, rescale each to [0, 1] (best 0), then score.
    n, k = len(points), len(directions)
    cols = []
    for j in range(k):
        col = [p[j] if directions[j] == "min" else -p[j] for p in points]
        lo, hi = min(col), max(col)
        cols.append([(v - lo) / (hi - lo) if hi > lo else 0.0 for v in col])
    total = sum(weights)
    w = [x / total for x in weights]
    scores = []
    for i in range(n):
        terms = [w[j] * cols[j][i] for j in range(k)]
        scores.append(sum(terms) if scalarisation == "weighted_sum" else max(terms))
    return scores


@pytest.mark.parametrize("scalarisation", pareto.SCALARISATIONS)
@pytest.mark.parametrize("seed", range(5))
def test_ranking_matches_brute_force(seed, scalarisation):
    rng = np.random.default_rng(seed)
    k = 2 + seed % 2
    points = rng.normal(size=(30, k)) * rng.uniform(0.1, 100, size=k)
    directions = ["max", "min", "max"][:k]
    weights = rng.uniform(0, 1, size=k)
    expected = _brute_scores(points.tolist(), directions, weights.tolist(), scalarisation)
    scores = pareto.preference_scores(points, directions, weights, scalarisation)
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)
    order = pareto.preference_ranking(points, directions, weights, scalarisation)
    assert [expected[i] for i in order] == sorted(expected)


def _reached_2d(front):
    """Front rows (minimisation, 2 objectives) that some weight (w, 1 - w) makes best: a
    row's best-set only changes where two rows tie, so checking every such weight, the ends
    and the midpoints between consecutive ones covers every case exactly."""
    critical = {0.0, 1.0}
    for p, q in itertools.combinations(front, 2):
        a, b = p[0] - q[0], p[1] - q[1]  # w a + (1 - w) b = 0
        if a != b:
            w = b / (b - a)
            if 0 < w < 1:
                critical.add(w)
    ws = sorted(critical)
    ws += [(x + y) / 2 for x, y in zip(ws, ws[1:])]
    reached = set()
    for w in ws:
        values = [w * p[0] + (1 - w) * p[1] for p in front]
        best = min(values)
        reached |= {i for i, v in enumerate(values) if v <= best + 1e-12}
    return reached


@pytest.mark.parametrize("seed", range(6))
def test_unreachable_2d_matches_exact_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    # Points near a concave curve, so some front points sit in non-convex parts.
    t = rng.uniform(0, 1, size=25)
    points = np.column_stack([t, 1 - t**2 + rng.normal(0, 0.05, size=25)])
    directions = ["min", "min"]
    unreachable = pareto.weighted_sum_unreachable(points, directions)
    front_idx = np.flatnonzero(pareto.non_dominated(points, directions))
    f = pareto.normalised_losses(points[front_idx], directions)
    reached = _reached_2d([tuple(r) for r in f])
    expected = {int(front_idx[i]) for i in range(len(front_idx)) if i not in reached}
    assert set(np.flatnonzero(unreachable)) == expected
    assert not unreachable[~pareto.non_dominated(points, directions)].any()
    assert expected, "the fixture should have a non-convex part"


def test_unreachable_3d_agrees_with_a_weight_grid():
    rng = np.random.default_rng(7)
    raw = rng.uniform(0.05, 1, size=(40, 3))
    points = raw / np.linalg.norm(raw, axis=1, keepdims=True) ** 0.5  # a mix of convex and not
    directions = ["min", "min", "min"]
    unreachable = pareto.weighted_sum_unreachable(points, directions)
    front = pareto.non_dominated(points, directions)
    f = pareto.normalised_losses(points, directions)
    grid = [(a / 60, b / 60, (60 - a - b) / 60) for a in range(61) for b in range(61 - a)]
    sampled = {int(np.argmin(np.where(front, f @ np.array(w), np.inf))) for w in grid}
    # Every row a grid weight picks is reachable; unreachable rows are never picked.
    assert not (set(np.flatnonzero(unreachable)) & sampled)
    # By hand: beside (0, 1, 1), (1, 0, 1), (1, 1, 0), the point (c, c, c) is best for some
    # weights iff every w_i <= 1 - c is possible with sum(w) = 1, i.e. iff c <= 2/3.
    corners = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    for c, expected in ((0.7, True), (0.6, False)):
        marks = pareto.weighted_sum_unreachable(np.array([*corners, [c, c, c]]), directions)
        assert marks.tolist() == [False, False, False, expected]


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seed", range(4))
def test_the_hull_finds_the_rows_the_per_row_lps_find(k, seed):
    """The one-hull method (the default up to four objectives) against one LP per row, on
    fronts with convex and concave parts, repeated rows and rows tied in one objective."""
    rng = np.random.default_rng(1000 * k + seed)
    raw = rng.uniform(0.05, 1, size=(120, k))
    power = rng.choice([0.5, 2.0], size=(120, 1))  # spheres bulging in and out
    points = raw / np.linalg.norm(raw, axis=1, keepdims=True) ** power
    # Rows a hair better than others in the maximised objective.
    nudged = points[5:8] + np.array([0] * (k - 1) + [1e-3])
    points = np.vstack([points, points[:5], nudged])
    points[10:13, 0] = points[9, 0]  # ties in the first objective
    directions = ["min"] * (k - 1) + ["max"]
    by_hull = pareto.weighted_sum_unreachable(points, directions, method="hull")
    by_lp = pareto.weighted_sum_unreachable(points, directions, method="lp")
    assert by_hull.tolist() == by_lp.tolist()
    assert (pareto.weighted_sum_unreachable(points, directions) == by_hull).all()
    front = pareto.non_dominated(points, directions)
    assert 0 < by_hull.sum() < front.sum(), "the fixture should have both kinds of front row"


def test_preference_inputs_are_checked():
    with pytest.raises(pareto.ParetoInputError, match="one value per objective"):
        pareto.preference_scores([[1, 2]], ["min", "min"], [1, 2, 3])
    with pytest.raises(pareto.ParetoInputError, match="at least one > 0"):
        pareto.preference_scores([[1, 2]], ["min", "min"], [0, 0])
    with pytest.raises(pareto.ParetoInputError, match="allowed: weighted_sum, chebyshev"):
        pareto.preference_scores([[1, 2]], ["min", "min"], [1, 1], "sum")
    with pytest.raises(pareto.ParetoInputError, match="allowed: auto, hull, lp"):
        pareto.weighted_sum_unreachable([[1, 2], [2, 1], [3, 0]], ["min", "min"], method="x")
