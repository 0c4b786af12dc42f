"""Pareto fronts of finished runs: which runs are non-dominated, and their hypervolume.

Plain data only (numpy arrays, dataclasses, dicts); :mod:`workbench.fronts.plots` renders it.
Every function takes the objective values as an ``(n, k)`` array (one row per run, one
column per objective) and a direction per column, ``"min"`` or ``"max"``, so a caller
never has to negate values by hand.

Definitions used throughout:

- Row ``a`` *dominates* row ``b`` when ``a`` is at least as good as ``b`` in every
  objective and strictly better in at least one. Exact duplicates do not dominate each
  other, so all copies of a non-dominated row are non-dominated.
- The *hypervolume* of a set of rows with respect to a reference point is the volume of
  the region that is dominated by at least one row and bounded by the reference point.
  The reference point is worse than the interesting rows in every objective: below them
  for a maximised objective, above them for a minimised one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import moocore
import numpy as np

from workbench.spec.errors import WorkbenchError
from workbench.spec.objective_source import direction_sign

DIRECTIONS = ("min", "max")


class ParetoInputError(WorkbenchError, ValueError):
    """Objective values, directions, names or a reference point are malformed."""


# --------------------------------------------------------------------------- validation


def _check_directions(directions: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a Sequence too; "min" would silently become ["m", "i", "n"].
    if isinstance(directions, str):
        raise ParetoInputError(
            f"directions must be a sequence with one 'min' or 'max' per objective, "
            f"not the single string {directions!r}; pass e.g. [{directions!r}]"
        )
    directions = tuple(directions)
    if not directions:
        raise ParetoInputError(
            "directions is empty: give one 'min' or 'max' per objective (at least one)"
        )
    for i, d in enumerate(directions):
        if d not in DIRECTIONS:
            raise ParetoInputError(
                f"directions[{i}] is {d!r}; each direction must be 'min' or 'max'"
            )
    return directions


def _check_points(points: Any, directions: tuple[str, ...]) -> np.ndarray:
    k = len(directions)
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ParetoInputError(
            f"points must be numbers in an (n, {k}) array, one row per run: {e}"
        ) from None
    if arr.ndim == 1 and arr.size == 0:
        return np.empty((0, k), dtype=np.float64)  # [] means "no runs yet"
    if arr.ndim != 2:
        raise ParetoInputError(
            f"points must be a 2-D (n, k) array with one row per run and one column per "
            f"objective; got shape {arr.shape}"
            + (
                "; for a single objective reshape to (n, 1), e.g. np.reshape(x, (-1, 1))"
                if arr.ndim == 1
                else ""
            )
        )
    if arr.shape[1] != k:
        raise ParetoInputError(
            f"points has {arr.shape[1]} columns (objectives) but {k} directions were "
            f"given; pass exactly one 'min' or 'max' per column"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ParetoInputError(
            f"points[{row}, {col}] is {arr[row, col]}; objective values must be finite "
            f"({int(bad.sum())} non-finite value(s) in all): drop or fix those runs first"
        )
    return arr


def _check_reference(reference: Any, directions: tuple[str, ...]) -> np.ndarray:
    k = len(directions)
    try:
        ref = np.asarray(reference, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ParetoInputError(f"reference must be {k} numbers: {e}") from None
    if ref.shape != (k,):
        raise ParetoInputError(
            f"reference must have one value per objective ({k}), got shape {ref.shape}"
        )
    if not np.isfinite(ref).all():
        raise ParetoInputError(
            f"reference is {ref.tolist()}; every coordinate must be finite "
            f"(a value worse than every run of interest in that objective)"
        )
    return ref


def _check_names(names: Sequence[str] | None, k: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"objective_{i}" for i in range(k))
    if isinstance(names, str):
        raise ParetoInputError(f"names must be a sequence of {k} strings, not one string")
    names = tuple(str(n) for n in names)
    if len(names) != k:
        raise ParetoInputError(f"got {len(names)} names for {k} objectives; give one each")
    if len(set(names)) != k:
        raise ParetoInputError(f"objective names must be distinct, got {list(names)}")
    return names


def _check_labels(labels: Sequence[Any] | None, n: int) -> tuple[str, ...]:
    if labels is None:
        return tuple(str(i) for i in range(n))
    if isinstance(labels, str):
        raise ParetoInputError(f"labels must be a sequence of {n} run labels, not one string")
    labels = tuple(str(label) for label in labels)
    if len(labels) != n:
        raise ParetoInputError(f"got {len(labels)} labels for {n} runs; give one per row")
    return labels


def _as_minimisation(values: np.ndarray, directions: tuple[str, ...]) -> np.ndarray:
    """Negate the maximised columns, so that smaller is better everywhere."""
    signs = np.array([-float(direction_sign(d)) for d in directions])
    minimised: np.ndarray = values * signs
    return minimised


# --------------------------------------------------------------------------- computations


def non_dominated(points: Any, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask over the rows of ``points``: True where no other row dominates it.

    ``points`` is ``(n, k)`` with ``k >= 1``; ``directions`` holds ``"min"`` or ``"max"``
    per column. Exact duplicates of a non-dominated row are all marked True. An empty
    input gives an empty mask.
    """
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    # moocore rather than an all-pairs numpy comparison: it is O(n log n) for k <= 3 and
    # needs O(n) memory, where the broadcast check needs an (n, n, k) array, which matters
    # for studies with thousands of trials. keep_weakly=True keeps every copy of a
    # non-dominated duplicate, matching the definition above (its default keeps one).
    mask = moocore.is_nondominated(_as_minimisation(arr, directions), keep_weakly=True)
    return np.asarray(mask, dtype=bool)


def hypervolume(points: Any, directions: Sequence[str], reference: Any) -> float:
    """Volume dominated by ``points`` and bounded by ``reference``.

    Rows that are not strictly better than the reference in every objective add nothing
    and are left out. Returns 0.0 when no row is left.
    """
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    ref = _check_reference(reference, directions)
    arr_min = _as_minimisation(arr, directions)
    ref_min = _as_minimisation(ref, directions)
    # Filter ourselves instead of relying on how moocore treats rows on or beyond the
    # reference: the definition above is then explicit here and tested.
    inside = (arr_min < ref_min).all(axis=1)
    if not inside.any():
        return 0.0
    return float(moocore.hypervolume(arr_min[inside], ref=ref_min))


def default_reference(points: Any, directions: Sequence[str]) -> np.ndarray:
    """A reference point just worse than every row: the nadir pushed out by 10% of the range.

    Used when the objectives do not declare one. The margin keeps the worst runs on the
    front contributing some volume; where all runs tie in an objective the margin is 10%
    of the value's magnitude (or 1.0 at zero) so the volume stays positive.
    """
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    if arr.shape[0] == 0:
        raise ParetoInputError("cannot derive a reference point from zero runs; pass one")
    arr_min = _as_minimisation(arr, directions)
    worst, best = arr_min.max(axis=0), arr_min.min(axis=0)
    span = worst - best
    margin = np.where(span > 0, 0.1 * span, np.where(worst != 0, 0.1 * np.abs(worst), 1.0))
    return _as_minimisation(worst + margin, directions)  # negation is its own inverse


def front_table(
    points: Any,
    directions: Sequence[str],
    names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """The non-dominated rows as dicts ``{"label": ..., <name>: value, ...}``, for printing.

    Sorted by the first objective's value (ascending), ties broken by the next objectives;
    exact duplicates keep their input order.
    """
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    names = _check_names(names, len(directions))
    labels = _check_labels(labels, arr.shape[0])
    if "label" in names:
        raise ParetoInputError("an objective may not be called 'label' (the row key for runs)")
    idx = np.flatnonzero(non_dominated(arr, directions))
    # np.lexsort sorts by its last key first and is stable.
    order = idx[np.lexsort(arr[idx].T[::-1])] if idx.size else idx
    return [
        {"label": labels[i], **{name: float(arr[i, j]) for j, name in enumerate(names)}}
        for i in order
    ]


# eq=False: the generated __eq__ would compare numpy arrays, which is ambiguous.
@dataclass(frozen=True, eq=False)
class ParetoFront:
    """Everything a Pareto view shows about a set of runs; built by :func:`compute_front`.

    ``mask[i]`` says whether run ``i`` is non-dominated; ``reference`` is None only when
    there are no runs and none was given; ``hypervolume`` is that of all runs (dominated
    ones add nothing) with respect to ``reference``, 0.0 with no runs.
    """

    names: tuple[str, ...]
    directions: tuple[str, ...]
    reference: np.ndarray | None
    points: np.ndarray  # (n, k) float64, one row per run
    labels: tuple[str, ...]  # run ids or names, one per row
    mask: np.ndarray  # (n,) bool, True on the front
    hypervolume: float

    @property
    def front_points(self) -> np.ndarray:
        """The non-dominated rows, in input order."""
        rows: np.ndarray = self.points[self.mask]
        return rows

    @property
    def front_labels(self) -> tuple[str, ...]:
        """Labels of the non-dominated rows, in input order."""
        return tuple(label for label, keep in zip(self.labels, self.mask, strict=True) if keep)

    def table(self) -> list[dict[str, Any]]:
        """The front as printable rows; see :func:`front_table`."""
        return front_table(self.points, self.directions, self.names, self.labels)


def compute_front(
    points: Any,
    directions: Sequence[str],
    reference: Any | None = None,
    names: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
) -> ParetoFront:
    """Compute the front, its hypervolume and everything needed to plot it.

    ``reference`` defaults to :func:`default_reference` of the points; ``names`` default
    to ``objective_0, objective_1, ...``; ``labels`` default to the row numbers.
    """
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    names = _check_names(names, len(directions))
    labels = _check_labels(labels, arr.shape[0])
    if reference is not None:
        ref = _check_reference(reference, directions)
    elif arr.shape[0] > 0:
        ref = default_reference(arr, directions)
    else:
        ref = None
    mask = non_dominated(arr, directions)
    hv = hypervolume(arr, directions, ref) if ref is not None else 0.0
    return ParetoFront(
        names=names,
        directions=directions,
        reference=ref,
        points=arr,
        labels=labels,
        mask=mask,
        hypervolume=hv,
    )


# --------------------------------------------------------------------------- preferences
#
# Preference weights over finished runs (not training weights): a user says how much each
# objective matters, and the runs are ranked after the fact. Objectives are first put on a
# common scale (:func:`normalised_losses`), so a weight means the same for an accuracy in
# [0, 1] and a length in tokens.

SCALARISATIONS = ("weighted_sum", "chebyshev")


def _check_weights(weights: Any, k: int) -> np.ndarray:
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ParetoInputError(f"preference weights must be {k} numbers: {e}") from None
    if w.shape != (k,):
        raise ParetoInputError(
            f"preference weights must have one value per objective ({k}), got shape {w.shape}"
        )
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ParetoInputError(
            f"preference weights are {w.tolist()}; each must be finite and >= 0, and at "
            f"least one > 0"
        )
    normalised: np.ndarray = w / w.sum()
    return normalised


def normalised_losses(points: Any, directions: Sequence[str]) -> np.ndarray:
    """Each objective rescaled to [0, 1] across the rows, 0 the best value and 1 the worst,
    whatever its direction; a column where every row ties is 0."""
    directions = _check_directions(directions)
    arr = _as_minimisation(_check_points(points, directions), directions)
    if arr.shape[0] == 0:
        return arr
    best, worst = arr.min(axis=0), arr.max(axis=0)
    span = np.where(worst > best, worst - best, 1.0)
    losses: np.ndarray = (arr - best) / span
    return losses


def preference_scores(
    points: Any, directions: Sequence[str], weights: Any, scalarisation: str = "weighted_sum"
) -> np.ndarray:
    """One score per row under preference ``weights`` (normalised to sum 1); lower is better.

    On the normalised losses ``f`` (:func:`normalised_losses`): ``weighted_sum`` is
    ``sum_j w_j f_j``, ``chebyshev`` is ``max_j w_j f_j`` (the weighted distance to the
    ideal point, which can prefer any front point, also those in non-convex parts).
    """
    if scalarisation not in SCALARISATIONS:
        raise ParetoInputError(
            f"scalarisation {scalarisation!r}; allowed: {', '.join(SCALARISATIONS)}"
        )
    f = normalised_losses(points, directions)
    w = _check_weights(weights, f.shape[1])
    scores: np.ndarray = f @ w if scalarisation == "weighted_sum" else (f * w).max(axis=1)
    return scores


def preference_ranking(
    points: Any, directions: Sequence[str], weights: Any, scalarisation: str = "weighted_sum"
) -> np.ndarray:
    """Row indices from best to worst under :func:`preference_scores` (ties: input order)."""
    return np.argsort(preference_scores(points, directions, weights, scalarisation), kind="stable")


UNREACHABLE_METHODS = ("auto", "hull", "lp")
# Above this many objectives the hull's facets grow too many; one LP per row stays linear.
_HULL_MAX_OBJECTIVES = 4


def weighted_sum_unreachable(
    points: Any, directions: Sequence[str], tol: float = 1e-9, method: str = "auto"
) -> np.ndarray:
    """Boolean mask: True on the front rows that no weighted sum can make best.

    A front row ``p`` is reachable when some weights ``w >= 0`` (summing to 1) give it a
    weighted sum at least as good as every other row's (ties count); such rows lie on the
    convex hull of the front. Rows in a non-convex (concave) part of the front are
    unreachable: only a scalarisation like Chebyshev selects them. Dominated rows are
    False. Scaling an objective does not change the answer, so the normalised losses are
    used.

    ``method``: ``hull`` finds every reachable row at once on one convex hull (see
    :func:`_on_dominance_hull`); ``lp`` solves one small linear feasibility problem per
    front row; ``auto`` (the default) takes the hull up to four objectives, where it is
    hundreds of times faster on a front of hundreds of rows, and the LPs beyond.
    """
    if method not in UNREACHABLE_METHODS:
        raise ParetoInputError(f"method {method!r}; allowed: {', '.join(UNREACHABLE_METHODS)}")
    directions = _check_directions(directions)
    arr = _check_points(points, directions)
    front = non_dominated(arr, directions)
    out = np.zeros(arr.shape[0], dtype=bool)
    idx = np.flatnonzero(front)
    if idx.size <= 2 or arr.shape[1] == 1:
        return out  # the extremes of a front are always reachable
    f = normalised_losses(arr[idx], directions)
    reachable = None
    if method == "hull" or (method == "auto" and f.shape[1] <= _HULL_MAX_OBJECTIVES):
        reachable = _on_dominance_hull(f, tol)
    if reachable is None:
        reachable = np.array([_weights_reach(p, f, tol) for p in f])
    out[idx] = ~reachable
    return out


def _on_dominance_hull(f: np.ndarray, tol: float) -> np.ndarray | None:
    """Which rows of ``f`` (losses) some weighted sum makes best, from one convex hull; None
    where qhull cannot build it.

    The hull is that of the rows and, for each row, a copy moved one unit along each axis
    (worse in that objective). A row on a facet ``n . x + c = 0`` of it is reachable: the hull
    holds the row's moved copies, so ``n_j <= 0`` for every objective, and ``w = -n`` is a
    weighting under which no row beats it. A reachable row lies on such a facet: its
    supporting weights also support the hull, which the moved copies only extend in worse
    directions. So the rows on the hull's surface are exactly the reachable ones, the others
    lie strictly inside.
    """
    from scipy.spatial import ConvexHull, QhullError  # scipy comes with mlflow

    n, k = f.shape
    moved = (f[:, None, :] + np.eye(k)[None]).reshape(n * k, k)
    try:
        hull = ConvexHull(np.vstack([f, moved]))
    except (QhullError, ValueError):
        return None
    # Facet equations, unit normals: n . x + c <= 0 inside; 0 on the facet.
    distance = f @ hull.equations[:, :-1].T + hull.equations[:, -1]
    reachable: np.ndarray = distance.max(axis=1) >= -tol
    return reachable


def _weights_reach(p: np.ndarray, f: np.ndarray, tol: float) -> bool:
    """Whether weights ``w >= 0`` summing to 1 make row ``p`` of losses ``f`` at least as good
    as every row: one linear feasibility problem."""
    from scipy.optimize import linprog  # scipy comes with mlflow; imported only here

    k = f.shape[1]
    # Feasibility: w . (p - q) <= tol for every front row q, sum(w) = 1, w >= 0.
    result = linprog(
        np.zeros(k),
        A_ub=p[None, :] - f,
        b_ub=np.full(len(f), tol),
        A_eq=np.ones((1, k)),
        b_eq=[1.0],
        bounds=[(0, None)] * k,
        method="highs",
    )
    return bool(result.status != 2)  # 2: infeasible
