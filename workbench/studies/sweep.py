"""Weight sweeps: one run per point on the simplex of training weights, under a parent run.

A sweep varies the training weights of the spec's weighted objectives (those with a loss
``term``), two or more of them, or, for a mixture of tasks (``data.mixture``), the tasks'
mixture weights (:func:`swept_weights`): :func:`simplex_grid` spreads points evenly over the weight
simplex, :func:`simplex_random` draws them at random, :func:`weight_grid` is the
two-objective shorthand (the first objective's weight ``w``, the second ``1 - w``).

Each child is an ordinary run (same runner, same tracking), run one after another in this
process (``parallel=1``) or as background processes, at most ``parallel`` alive at once
(:func:`workbench.running.launcher.launch`). When they are done, the parent run records the front
of the finished children, read back from MLflow by :mod:`workbench.fronts.finished_runs` (the same
function ``workbench front`` uses): ``sweep/hypervolume`` against the objectives'
reference point, ``sweep/base_hypervolume`` (the base model's point, step 0 of the first
child), ``sweep/front_size``, ``front.json`` and the plot (``front/front.html``).

Ctrl-C or SIGTERM stops the running children (they end KILLED) and ends the parent KILLED.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from workbench import tracking
from workbench.data.sources import load_rows
from workbench.fronts import finished_runs as fronts
from workbench.fronts import plots
from workbench.fronts.pareto import ParetoFront
from workbench.running.launcher import RunHandle, launch
from workbench.running.pipeline import RunResult, run
from workbench.running.signals import SigtermRaisesInterrupt, StopRequests
from workbench.spec import registry
from workbench.spec.errors import RunFailed, SpecError
from workbench.spec.mlflow_names import KIND_SWEEP, TAG_KIND
from workbench.spec.run_spec import RunSpec
from workbench.tracking.naming import study_run_name

DESIGNS = ("grid", "random")
# Interior margin of the designs: every weight is at least this, so no term is switched off.
MARGIN = 0.1
# How often a background sweep checks its children and a stop request.
POLL_S = 0.2


@dataclass
class SweepResult:
    parent_run_id: str
    weights: list  # one per point, as given: a float (two objectives) or a tuple of weights
    runs: list[RunResult]  # one per point, in the points' order (failed ones without values)
    front: ParetoFront  # over the FINISHED children
    base_objectives: dict[str, float]
    base_hypervolume: float
    figure_path: Path | None = None


# --------------------------------------------------------------------------- designs


def weight_grid(points: int, low: float = 0.1, high: float = 0.9) -> list[float]:
    """Evenly spaced training weights for the first objective (the second gets 1 - w)."""
    if points < 2:
        raise SpecError(f"a sweep needs at least 2 points, got {points}")
    return [round(float(w), 4) for w in np.linspace(low, high, points)]


def _on_simplex(lattice: np.ndarray, margin: float) -> list[tuple[float, ...]]:
    """Map points of the unit simplex into its interior (every weight >= margin), rounded to
    4 decimals with the last weight making the sum exactly 1."""
    n = lattice.shape[1]
    weights = margin + (1.0 - n * margin) * lattice
    out = []
    for row in weights:
        head = [round(float(w), 4) for w in row[:-1]]
        out.append((*head, round(1.0 - sum(head), 4)))
    return out


def _check_design(n_objectives: int, points: int, margin: float) -> None:
    if n_objectives < 2:
        raise SpecError(f"a weight sweep needs at least 2 weighted objectives, got {n_objectives}")
    if points < 2:
        raise SpecError(f"a sweep needs at least 2 points, got {points}")
    if not 0 <= margin < 1 / n_objectives:
        raise SpecError(f"margin = {margin}: must be at least 0 and below 1/{n_objectives}")


def grid_sizes(n_objectives: int, up_to: int = 60) -> list[int]:
    """The point counts a simplex grid over ``n_objectives`` weights can have (up to ``up_to``):
    C(H + n - 1, n - 1) for H = 1, 2, ... divisions of each weight's range."""
    sizes, divisions = [], 1
    while (size := math.comb(divisions + n_objectives - 1, n_objectives - 1)) <= up_to:
        sizes.append(size)
        divisions += 1
    return sizes


def simplex_grid(n_objectives: int, points: int, margin: float = MARGIN) -> list[tuple[float, ...]]:
    """Evenly spread training weights: the simplex lattice {k / H : k_i >= 0, sum k = H} moved
    into the interior (w = margin + (1 - n * margin) * k / H), first weight increasing.

    ``points`` must be a lattice size (:func:`grid_sizes`: any count for 2 objectives; 3, 6,
    10, 15, ... for 3). For 2 objectives this is :func:`weight_grid` as pairs (w, 1 - w).
    """
    _check_design(n_objectives, points, margin)
    divisions = next(
        (
            h
            for h in range(1, points + 1)
            if math.comb(h + n_objectives - 1, n_objectives - 1) == points
        ),
        None,
    )
    if divisions is None:
        raise SpecError(
            f"points = {points}: a grid over {n_objectives} weights has "
            f"{', '.join(map(str, grid_sizes(n_objectives, max(points * 2, 30))))}, ... points; "
            "choose one of those, or the random design for any count"
        )
    # Stars and bars: each choice of n - 1 bar positions among H + n - 1 slots is one point.
    lattice = []
    for bars in combinations(range(divisions + n_objectives - 1), n_objectives - 1):
        edges = (-1, *bars, divisions + n_objectives - 1)
        lattice.append([edges[i + 1] - edges[i] - 1 for i in range(n_objectives)])
    lattice = np.array(sorted(lattice), dtype=float) / divisions
    return _on_simplex(lattice, margin)


def simplex_random(
    n_objectives: int, points: int, seed: int = 0, margin: float = MARGIN
) -> list[tuple[float, ...]]:
    """``points`` training-weight vectors drawn uniformly on the simplex (Dirichlet(1, ..., 1)),
    moved into its interior like :func:`simplex_grid`; the same ``seed`` gives the same points."""
    _check_design(n_objectives, points, margin)
    lattice = np.random.default_rng(seed).dirichlet(np.ones(n_objectives), size=points)
    return _on_simplex(lattice, margin)


def design_points(
    design: str, n_objectives: int, points: int, seed: int = 0
) -> list[tuple[float, ...]]:
    """The weights of a ``design`` ('grid' or 'random') for ``n_objectives`` weighted objectives."""
    if design == "grid":
        return simplex_grid(n_objectives, points)
    if design == "random":
        return simplex_random(n_objectives, points, seed=seed)
    raise SpecError(f"design = {design!r}: unknown; allowed: {', '.join(DESIGNS)}")


# --------------------------------------------------------------------------- specs


def weighted_objectives(spec: RunSpec) -> list[str]:
    """Names of the objectives whose weight is a training weight (they have a loss term)."""
    return [o.name for o in spec.objectives if o.term is not None]


def swept_weights(spec: RunSpec) -> list[str]:
    """What a sweep's points set, in order: the tasks of a mixture of tasks (``data.mixture``:
    a sweep over the mixture traces the trade-off between its tasks' objectives), else the
    weighted objectives."""
    if spec.data.mixture is not None:
        return list(spec.data.mixture)
    return weighted_objectives(spec)


def sweep_specs(spec: RunSpec, weights: Sequence[float | Sequence[float]]) -> list[RunSpec]:
    """Copies of ``spec``, one per point, with the weighted objectives' training weights set
    (a mixture of tasks: the tasks' mixture weights, :func:`swept_weights`).

    A point is a tuple with one weight per weighted objective (in the spec's order), or a
    float ``w``: the first two weighted objectives get ``(w, 1 - w)``.
    """
    if spec.data.mixture is not None:
        return _mixture_specs(spec, weights)
    weighted = weighted_objectives(spec)
    if len(weighted) < 2:
        raise SpecError(
            "a weight sweep needs at least two objectives with a training term; the spec has "
            f"{weighted}. Use a multi-objective task such as 'order' or 'explain'"
        )
    specs = []
    for point in weights:
        values = _point_weights(point, weighted, "weighted objectives")
        if isinstance(point, (int, float)):
            name = f"{weighted[0]}={point:g}"
        else:
            name = ",".join(f"{n}={w:g}" for n, w in values.items())
        objectives = []
        for o in spec.objectives:
            data = o.model_dump(mode="json")
            if o.name in values:
                data["weight"] = values[o.name]
            objectives.append(data)
        specs.append(spec.updated(objectives=objectives, **{"tracking.run_name": name}))
    return specs


def _mixture_specs(spec: RunSpec, weights: Sequence[float | Sequence[float]]) -> list[RunSpec]:
    """:func:`sweep_specs` of a mixture: each point's weights become ``data.mixture``'s."""
    assert spec.data.mixture is not None
    tasks = list(spec.data.mixture)
    if len(tasks) < 2:
        raise SpecError(
            f"a mixture sweep needs at least two tasks in data.mixture; the spec has {tasks}"
        )
    specs = []
    for point in weights:
        # A float sets the first two tasks' weights; the others stay as they are.
        values = _point_weights(point, tasks, "tasks of data.mixture")
        name = ",".join(f"{task}={w:g}" for task, w in values.items())
        mixture = spec.data.mixture | values
        specs.append(spec.updated(**{"data.mixture": mixture, "tracking.run_name": name}))
    return specs


def _point_weights(point: float | Sequence[float], names: list[str], what: str) -> dict:
    """One sweep point as ``{name: weight}``: a tuple gives each of ``names`` its weight, a
    float ``w`` the first two ``(w, 1 - w)``."""
    if isinstance(point, (int, float)):
        return {names[0]: point, names[1]: round(1.0 - point, 4)}
    if len(point) != len(names):
        raise SpecError(
            f"weights {tuple(point)}: {len(point)} values for {len(names)} {what} {names}; "
            "give one weight each"
        )
    return dict(zip(names, point))


# --------------------------------------------------------------------------- running


def run_sweep(
    spec: RunSpec,
    weights: Sequence[float | Sequence[float]] | None = None,
    *,
    points: int | None = None,
    design: str = "grid",
    seed: int = 0,
    parallel: int = 1,
    progress: bool = False,
    log=print,
    figure_path: str | Path | None = None,
    timeout_s: float | None = None,
) -> SweepResult:
    """Run one child per weight point and record the front of the finished ones on a parent run.

    Give ``weights`` (see :func:`sweep_specs`), or ``points`` and a ``design`` ('grid':
    :func:`simplex_grid`, 'random': :func:`simplex_random` with ``seed``) over all the
    weighted objectives. ``parallel=1`` trains the children one after another in this
    process; ``parallel=K > 1`` launches them as background processes, at most K at once
    (each takes its share of this machine's cores as torch threads: see
    :mod:`workbench.running.core_share`). ``timeout_s`` bounds the whole sweep (its children are
    then stopped and the parent ends FAILED). Ctrl-C or SIGTERM stops the children and ends
    the parent KILLED.
    """
    if (weights is None) == (points is None):
        raise SpecError("give either weights or points (with a design), not both or neither")
    if parallel < 1:
        raise SpecError(f"parallel = {parallel}: must be at least 1")
    if weights is None:
        swept = swept_weights(spec)
        if len(swept) < 2:
            sweep_specs(spec, [])  # the same message as for explicit weights
        weights = design_points(design, len(swept), points, seed=seed)
    specs = sweep_specs(spec, weights)
    names = weighted_objectives(spec)
    # Bad data fails here, before any run is created.
    load_rows(spec.data, spec.train.seed, row_kind=registry.METHODS[spec.method.name].row_kind)
    names += [o.name for o in spec.objectives if o.name not in names]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    client = tracking.connect(spec.tracking.uri)
    # Named after what it sweeps (``mo-sft order sweep``) unless the user named it.
    parent_spec = spec.updated(**{"tracking.run_name": study_run_name(spec, "sweep")})
    # SIGTERM ends the sweep like Ctrl-C (KeyboardInterrupt), so the parent ends KILLED; while
    # the parent is being created, either only sets a flag (no run without its recorder).
    # The parent carries no process tags: it trains nothing, and runs with them count as
    # training when launched runs share the cores (core_share). Were this process killed
    # hard, its heartbeat going stale gets the parent reaped (liveness).
    with SigtermRaisesInterrupt():
        with StopRequests() as stop:
            parent_id = tracking.start_run(client, parent_spec, extra_tags={TAG_KIND: KIND_SWEEP})
            recorder = tracking.RunRecorder(client, parent_id)
        with recorder as parent:
            if stop.is_set():
                raise KeyboardInterrupt
            return _run_and_record(
                spec,
                specs,
                list(weights),
                names,
                client,
                parent,
                parallel,
                progress,
                log,
                deadline,
                figure_path,
            )


def _run_and_record(
    spec, specs, weights, names, client, parent, parallel, progress, log, deadline, figure_path
) -> SweepResult:
    """The children, then the parent's front, hypervolumes, table and plot."""
    parent_id = parent.run_id
    if parallel == 1:
        results = _run_here(specs, parent_id, client, progress, log, deadline)
    else:
        results = _run_in_background(specs, parent_id, parallel, log, deadline)
    ids = [r.run_id for r in results]
    children = fronts.sweep_children(client, parent_id, order=ids)
    if not children:
        raise RunFailed(f"sweep {parent_id}: no child run finished; see the children's errors")
    # Background children's values and trajectories come from the store (in-process
    # ones have them from run(); the same numbers).
    by_id = {c["run_id"]: c for c in children}
    for r in results:
        if r.run_id in by_id and not r.trajectory:
            r.trajectory = fronts.objective_trajectory(client, r.run_id, names)
            r.objectives = {n: v for n, v in by_id[r.run_id]["objectives"].items() if n in names}
    front = fronts.front_from_runs(children, names)
    base = fronts.start_point(client, children[0]["run_id"], names)
    base_hv = fronts.point_hypervolume(front, base)
    figure = fronts.record_front(
        parent, front, base_hv, f"Pareto front of the weight sweep ({spec.data.source})", base=base
    )
    saved = plots.write_html(figure, figure_path) if figure_path is not None else None
    return SweepResult(parent_id, weights, results, front, base, base_hv, saved)


def _run_here(
    specs: list[RunSpec], parent_id: str, client, progress: bool, log, deadline: float | None
) -> list[RunResult]:
    """The children one after another in this process."""
    results = []
    for i, child in enumerate(specs):
        if deadline is not None and time.monotonic() > deadline:
            raise RunFailed(f"sweep {parent_id} ran out of time after {i} of {len(specs)} runs")
        log(f"[{i + 1}/{len(specs)}] {child.tracking.run_name}")
        try:
            results.append(run(child, parent_run_id=parent_id, progress=progress, log=log))
        except RunFailed as err:  # the child ended FAILED (its message names it); go on
            log(f"[{i + 1}/{len(specs)}] {child.tracking.run_name}: {err}")
            results.append(RunResult(None, "FAILED"))
        except KeyboardInterrupt:
            # A child interrupted while its run was being created (before the runner could
            # end it) would be left RUNNING: every child here is this process's, end it KILLED.
            for open_child in tracking.runs_frame(
                client, child.tracking.experiment, parent_run_id=parent_id, status="RUNNING"
            ):
                tracking.end_run(client, open_child["run_id"], "KILLED")
            raise
    return results


def _run_in_background(
    specs: list[RunSpec], parent_id: str, parallel: int, log, deadline: float | None
) -> list[RunResult]:
    """Background children, at most ``parallel`` alive at once; their statuses once all end."""
    total = len(specs)
    pending = list(range(total))
    running: dict[int, RunHandle] = {}
    handles: list[RunHandle | None] = [None] * total
    statuses: list[str] = ["NOT STARTED"] * total
    with StopRequests() as stop:
        try:
            while pending or running:
                while pending and len(running) < parallel and not stop.is_set():
                    i = pending.pop(0)
                    handle = launch(specs[i], parent_run_id=parent_id)
                    handles[i] = running[i] = handle
                    log(
                        f"[{i + 1}/{total}] {specs[i].tracking.run_name}: started run "
                        f"{handle.run_id} (pid {handle.pid}; log {handle.log_path})"
                    )
                if stop.is_set():
                    raise KeyboardInterrupt
                if deadline is not None and time.monotonic() > deadline:
                    raise RunFailed(
                        f"sweep {parent_id} ran out of time with {len(running)} runs "
                        f"going and {len(pending)} not started"
                    )
                _wait_for_an_exit(running.values(), POLL_S)
                for i, handle in list(running.items()):
                    if not handle.alive():
                        statuses[i] = handle.status()  # FAILED if it died without ending its run
                        del running[i]
                        log(f"[{i + 1}/{total}] {specs[i].tracking.run_name}: {statuses[i]}")
        except BaseException:
            _stop_all(list(running.values()), log)
            raise
    return [RunResult(h.run_id if h else None, s) for h, s in zip(handles, statuses)]


def _wait_for_an_exit(handles, timeout_s: float) -> None:
    """Wait at most ``timeout_s``, returning at once when the oldest child exits (the others
    are checked on return, so an exit is seen within ``timeout_s`` whichever child it is)."""
    handles = list(handles)
    if handles:
        handles[0].wait_exit(timeout_s)


def _stop_all(handles: list[RunHandle], log) -> None:
    """Stop running children side by side (each ends KILLED), so no run is left RUNNING."""
    if not handles:
        return
    log(f"stopping {len(handles)} running child run(s) ...")
    with ThreadPoolExecutor(max_workers=len(handles)) as pool:
        list(pool.map(lambda h: h.stop(), handles))
