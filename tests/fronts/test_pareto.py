"""workbench.fronts.pareto against brute-force oracles written independently of moocore.

The oracles work in the user's directions directly (no negation trick) so that a sign
mistake in the library's conversion to minimisation cannot cancel out in both.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.fronts.pareto import (
    ParetoFront,
    ParetoInputError,
    compute_front,
    default_reference,
    front_table,
    hypervolume,
    non_dominated,
)
from workbench.spec.errors import WorkbenchError

# --------------------------------------------------------------------------- oracles


def better_or_equal(a: float, b: float, direction: str) -> bool:
    return a <= b if direction == "min" else a >= b


def strictly_better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "min" else a > b


def brute_non_dominated(points: np.ndarray, directions: list[str]) -> np.ndarray:
    """O(n^2 k) double loop straight from the definition of dominance."""
    n = len(points)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            pairs = list(zip(points[j], points[i], directions, strict=True))
            if all(better_or_equal(a, b, d) for a, b, d in pairs) and any(
                strictly_better(a, b, d) for a, b, d in pairs
            ):
                mask[i] = False
                break
    return mask


def box_side(value: float, ref: float, direction: str) -> float:
    """Length of a point's box along one axis; 0 when it does not beat the reference."""
    return max(0.0, ref - value) if direction == "min" else max(0.0, value - ref)


def hv_inclusion_exclusion(points: np.ndarray, directions: list[str], ref: np.ndarray) -> float:
    """Exact volume of the union of boxes [p, ref] by inclusion-exclusion (any k, n <= ~10).

    The intersection of the boxes of a subset is the box of its coordinate-wise worst
    point, so each term is one product.
    """
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(range(len(points)), size):
            sub = points[list(subset)]
            volume = 1.0
            for j, d in enumerate(directions):
                worst = sub[:, j].max() if d == "min" else sub[:, j].min()
                volume *= box_side(worst, ref[j], d)
            total += (-1) ** (size + 1) * volume
    return total


def hv_grid(points: np.ndarray, directions: list[str], ref: np.ndarray) -> float:
    """Exact union volume by coordinate compression: cut space at every coordinate and add
    up the cells that some point's box covers (any k; fine for small n and k <= 3)."""
    k = points.shape[1]
    cuts = [np.unique(np.append(points[:, j], ref[j])) for j in range(k)]
    total = 0.0
    for cell in itertools.product(*[range(len(c) - 1) for c in cuts]):
        lo = np.array([cuts[j][c] for j, c in enumerate(cell)])
        hi = np.array([cuts[j][c + 1] for j, c in enumerate(cell)])
        centre = (lo + hi) / 2
        # A cell is covered when its centre is inside a box: between point and reference.
        for p in points:
            inside = all(
                (p[j] <= centre[j] <= ref[j]) if d == "min" else (ref[j] <= centre[j] <= p[j])
                for j, d in enumerate(directions)
            )
            if inside:
                total += float(np.prod(hi - lo))
                break
    return total


def hv_sweep_2d(points: np.ndarray, directions: list[str], ref: np.ndarray) -> float:
    """Exact 2-D hypervolume by sweeping along x from the best value to the reference."""
    sign = np.array([1.0 if d == "min" else -1.0 for d in directions])
    pts, r = points * sign, ref * sign  # within this oracle only: both axes minimised
    pts = pts[(pts < r).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    area, best_y = 0.0, r[1]
    for i, (x, y) in enumerate(pts):
        best_y = min(best_y, y)
        next_x = pts[i + 1, 0] if i + 1 < len(pts) else r[0]
        area += (next_x - x) * (r[1] - best_y)
    return area


# --------------------------------------------------------------------------- strategies

directions_st = st.integers(1, 4).flatmap(
    lambda k: st.lists(st.sampled_from(["min", "max"]), min_size=k, max_size=k)
)


@st.composite
def problems(draw, max_n: int = 12, max_k: int = 4):
    """Points on a coarse integer grid, so ties and exact duplicates are common."""
    k = draw(st.integers(1, max_k))
    directions = draw(st.lists(st.sampled_from(["min", "max"]), min_size=k, max_size=k))
    n = draw(st.integers(0, max_n))
    values = draw(st.lists(st.integers(0, 4), min_size=n * k, max_size=n * k))
    points = np.array(values, dtype=float).reshape(n, k)
    if n and draw(st.booleans()):  # force an exact duplicate of some row
        points = np.vstack([points, points[draw(st.integers(0, n - 1))]])
    return points, directions


def random_reference(rng: np.random.Generator, directions: list[str]) -> np.ndarray:
    # Reference inside the grid's range, so some points fall outside it.
    return np.array(
        [rng.uniform(2.5, 5) if d == "min" else rng.uniform(-1, 1.5) for d in directions]
    )


# --------------------------------------------------------------------------- non_dominated


@settings(max_examples=60, deadline=None)
@given(problems())
def test_non_dominated_matches_brute_force(problem):
    points, directions = problem
    mask = non_dominated(points, directions)
    assert mask.dtype == bool and mask.shape == (len(points),)
    np.testing.assert_array_equal(mask, brute_non_dominated(points, directions))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_non_dominated_matches_brute_force_fixed_seeds(seed, k):
    rng = np.random.default_rng(seed * 10 + k)
    directions = list(rng.choice(["min", "max"], size=k))
    n = 40
    # Rounded values: ties in single objectives; a few copied rows: exact duplicates.
    points = np.round(rng.normal(size=(n, k)), 1)
    points[rng.integers(0, n, 5)] = points[rng.integers(0, n, 5)]
    np.testing.assert_array_equal(
        non_dominated(points, directions), brute_non_dominated(points, directions)
    )


def test_non_dominated_duplicates_and_ties():
    points = [[1, 5], [1, 5], [2, 4], [2, 6], [3, 3]]
    # [2, 6] is dominated by [1, 5] when both are minimised; the duplicates both stay.
    np.testing.assert_array_equal(
        non_dominated(points, ["min", "min"]), [True, True, True, False, True]
    )
    # Maximising the second objective: [2, 6] now beats [2, 4] (tie in x, better y).
    np.testing.assert_array_equal(
        non_dominated(points, ["min", "max"]), [True, True, False, True, False]
    )


def test_non_dominated_single_objective_keeps_all_best_ties():
    np.testing.assert_array_equal(non_dominated([[3], [1], [1], [2]], ["min"]), [0, 1, 1, 0])
    np.testing.assert_array_equal(non_dominated([[3], [1], [3], [2]], ["max"]), [1, 0, 1, 0])


def test_non_dominated_empty():
    for empty in ([], np.empty((0, 3))):
        mask = non_dominated(empty, ["min", "max", "min"])
        assert mask.shape == (0,) and mask.dtype == bool


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_hand_computed():
    # Minimise both, reference (4, 4): boxes 3x1 and 1x3 overlapping in 1x1 -> 5.
    assert hypervolume([[1, 3], [3, 1]], ["min", "min"], [4, 4]) == pytest.approx(5.0)
    # The same picture with both axes flipped to maximisation.
    assert hypervolume([[-1, -3], [-3, -1]], ["max", "max"], [-4, -4]) == pytest.approx(5.0)
    # Mixed: accuracy (max) above 0.5, cost (min) below 10.
    assert hypervolume([[0.9, 4.0]], ["max", "min"], [0.5, 10.0]) == pytest.approx(0.4 * 6.0)
    # One objective: the distance from the best value to the reference.
    assert hypervolume([[2.0], [3.0]], ["min"], [5.0]) == pytest.approx(3.0)


def test_hypervolume_points_outside_reference_contribute_nothing():
    # On the reference in one objective, beyond it, and a dominated inside point.
    points = [[1.0, 4.0], [5.0, 0.0], [2.0, 2.0], [3.0, 3.0]]
    assert hypervolume(points, ["min", "min"], [4, 4]) == pytest.approx(4.0)
    assert hypervolume([[5.0, 5.0], [4.0, 1.0]], ["min", "min"], [4, 4]) == 0.0
    assert hypervolume([], ["min", "max"], [0, 0]) == 0.0


@settings(max_examples=60, deadline=None)
@given(problems(max_n=8, max_k=4), st.integers(0, 2**32 - 1))
def test_hypervolume_matches_inclusion_exclusion(problem, seed):
    points, directions = problem
    ref = random_reference(np.random.default_rng(seed), directions)
    expected = hv_inclusion_exclusion(points, directions, ref)
    assert hypervolume(points, directions, ref) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(problems(max_n=10, max_k=3), st.integers(0, 2**32 - 1))
def test_hypervolume_matches_grid(problem, seed):
    points, directions = problem
    ref = random_reference(np.random.default_rng(seed), directions)
    expected = hv_grid(points, directions, ref)
    assert hypervolume(points, directions, ref) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "directions", [["min", "min"], ["max", "min"], ["min", "max"], ["max", "max"]]
)
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_2d_matches_sweep(directions, seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, size=(60, 2))
    ref = np.array([0.8 if d == "min" else 0.2 for d in directions])  # some points outside
    expected = hv_sweep_2d(points, directions, ref)
    assert expected > 0
    assert hypervolume(points, directions, ref) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_ignores_dominated_points():
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(30, 3))
    directions, ref = ["max", "min", "max"], [0.0, 1.0, 0.0]
    mask = non_dominated(points, directions)
    assert not mask.all()
    assert hypervolume(points, directions, ref) == pytest.approx(
        hypervolume(points[mask], directions, ref), rel=1e-12
    )


# --------------------------------------------------------------------------- compute_front, table


def test_compute_front_fields():
    points = [[0.9, 120.0], [0.8, 80.0], [0.7, 100.0], [0.95, 200.0]]
    front = compute_front(
        points,
        ["max", "min"],
        reference=[0.5, 250.0],
        names=["accuracy", "latency_ms"],
        labels=["a", "b", "c", "d"],
    )
    assert isinstance(front, ParetoFront)
    assert front.names == ("accuracy", "latency_ms")
    assert front.directions == ("max", "min")
    np.testing.assert_array_equal(front.mask, [True, True, False, True])
    assert front.front_labels == ("a", "b", "d")
    np.testing.assert_array_equal(front.front_points, np.array(points)[[0, 1, 3]])
    assert front.hypervolume == pytest.approx(
        hv_inclusion_exclusion(np.array(points), ["max", "min"], np.array([0.5, 250.0]))
    )


def test_compute_front_defaults():
    points = np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    front = compute_front(points, ["min", "max"])
    assert front.names == ("objective_0", "objective_1")
    assert front.labels == ("0", "1", "2", "3")
    # Default reference: 10% of the range beyond the worst value, in the worse direction.
    np.testing.assert_allclose(front.reference, [3.2, 0.8])
    np.testing.assert_allclose(default_reference(points, ["min", "max"]), [3.2, 0.8])
    # Every front point is strictly inside it, so all contribute.
    assert front.hypervolume == pytest.approx(hv_sweep_2d(points, ["min", "max"], front.reference))
    # A constant objective still gets a positive margin.
    np.testing.assert_allclose(
        default_reference([[1.0, 0.0], [2.0, 0.0]], ["max", "min"]), [0.9, 1.0]
    )


def test_compute_front_no_runs():
    front = compute_front([], ["min", "max"], names=["loss", "reward"])
    assert front.points.shape == (0, 2) and front.mask.shape == (0,)
    assert front.reference is None and front.hypervolume == 0.0 and front.table() == []
    given_ref = compute_front([], ["min", "max"], reference=[1.0, 0.0])
    assert given_ref.hypervolume == 0.0


def test_front_table_sorted_by_first_objective():
    points = [[3, 1], [1, 3], [2, 2], [2, 2], [3, 3]]
    rows = front_table(points, ["min", "min"], ["loss", "cost"], labels=list("abcde"))
    assert [r["label"] for r in rows] == ["b", "c", "d", "a"]
    assert rows[0] == {"label": "b", "loss": 1.0, "cost": 3.0}
    assert [r["loss"] for r in rows] == sorted(r["loss"] for r in rows)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: non_dominated([1.0, 2.0], ["min"]), r"2-D .*reshape to \(n, 1\)"),
        (lambda: non_dominated(np.zeros((2, 2, 2)), ["min", "min"]), r"2-D .*shape \(2, 2, 2\)"),
        (lambda: non_dominated([[1, 2, 3]], ["min", "max"]), r"3 columns .* 2 directions"),
        (
            lambda: non_dominated([[1, 2]], ["min", "maximise"]),
            r"directions\[1\] is 'maximise'.*'min' or 'max'",
        ),
        (lambda: non_dominated([[1, 2]], "min"), r"not the single string 'min'"),
        (lambda: non_dominated([[1]], []), r"directions is empty"),
        (
            lambda: non_dominated([[1, 2], [np.nan, 1]], ["min", "min"]),
            r"points\[1, 0\] is nan.*finite",
        ),
        (lambda: non_dominated([["a", "b"]], ["min", "min"]), r"must be numbers"),
        (lambda: hypervolume([[1, np.inf]], ["min", "min"], [2, 2]), r"points\[0, 1\] is inf"),
        (lambda: hypervolume([[1, 1]], ["min", "min"], [2, np.nan]), r"reference .* finite"),
        (
            lambda: hypervolume([[1, 1]], ["min", "min"], [2, 2, 2]),
            r"one value per objective \(2\)",
        ),
        (lambda: compute_front([[1, 1]], ["min", "min"], names=["a"]), r"1 names for 2 objectives"),
        (lambda: compute_front([[1, 1]], ["min", "min"], names=["a", "a"]), r"distinct"),
        (
            lambda: compute_front([[1, 1]], ["min", "min"], labels=["x", "y"]),
            r"2 labels for 1 runs",
        ),
        (lambda: front_table([[1]], ["min"], names=["label"]), r"may not be called 'label'"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ParetoInputError, match=message) as info:
        call()
    assert isinstance(info.value, WorkbenchError) and isinstance(info.value, ValueError)
