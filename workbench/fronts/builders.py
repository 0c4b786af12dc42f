"""Five ways to build a Pareto front, each a kind of study with one entry point.

Every builder takes a multi-objective spec (``mo-sft`` and its weighted objectives, e.g. on
``order``) and a number of front points, and ends in one parent MLflow run with its children
and the front, its hypervolume and the plot
(:func:`workbench.fronts.finished_runs.record_front`); the parent carries the tag
``workbench.builder``. :func:`build_front` runs one by name from :data:`BUILDERS` and reports
what it cost: the training runs, their optimizer steps and the wall-clock seconds of the whole
study.

- ``sweep``: one run per weight point (:func:`workbench.studies.sweep.run_sweep`).
- ``conditioned``: one weight-conditioned run, evaluated at every point
  (:func:`workbench.fronts.conditioned.conditioned_front`).
- ``merging``: two runs at the ends of the weight range, merged along coefficients
  (:func:`workbench.merging.runs.merge_grid`; two weighted objectives).
- ``search``: an Optuna study over the training weights
  (:func:`workbench.studies.search.run_search`).
- ``mgda``: one ``mgda-sft`` run per point, each kept in its preference's region (a sweep of
  that method, every run given the whole grid as its neighbours).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.fronts.pareto import ParetoFront
from workbench.spec.errors import SpecError
from workbench.spec.mlflow_names import LOSS_KEY, TAG_BUILDER
from workbench.spec.run_spec import RunSpec

# The builders import the runner (and torch) when they run, so that the CLI checks a builder's
# name, and the table can be read, before any training library loads.


@dataclass(frozen=True)
class BuiltFront:
    """What every builder returns: the parent run holding the front, the front, the
    hypervolume of the base model's point, and the runs that trained; :func:`build_front`
    adds what the study cost."""

    builder: str
    parent_run_id: str
    front: ParetoFront
    base_hypervolume: float
    training_run_ids: list[str]
    # Optimizer steps over every training run (a pruned trial's as far as it went).
    training_steps: int = 0
    seconds: float = 0.0  # wall-clock time of the whole study: training and evaluation

    @property
    def hypervolume(self) -> float:
        return self.front.hypervolume


@dataclass(frozen=True)
class FrontBuilder:
    name: str
    summary: str  # what it trains, what it costs, when to use it
    build: Callable[..., BuiltFront]  # (spec, points, seed, log, progress)


# Where a builder says what it does, one line at a time (print, or a widget's log).
Log = Callable[[str], object]


def _sweep(spec: RunSpec, points: int, seed: int, log: Log, progress: bool) -> BuiltFront:
    from workbench.studies.sweep import run_sweep

    result = run_sweep(spec, points=points, seed=seed, log=log, progress=progress)
    return BuiltFront(
        "sweep",
        result.parent_run_id,
        result.front,
        result.base_hypervolume,
        [r.run_id for r in result.runs if r.run_id],
    )


def _conditioned(spec: RunSpec, points: int, seed: int, log: Log, progress: bool) -> BuiltFront:
    from workbench.fronts.conditioned import conditioned_front

    result = conditioned_front(spec, points=points, seed=seed, log=log, progress=progress)
    return BuiltFront(
        "conditioned",
        result.parent_run_id,
        result.front,
        result.base_hypervolume,
        [result.training_run_id],
    )


def _merging(spec: RunSpec, points: int, seed: int, log: Log, progress: bool) -> BuiltFront:
    from workbench.merging.runs import merge_grid
    from workbench.running.pipeline import run
    from workbench.studies.sweep import simplex_grid, sweep_specs, weighted_objectives

    names = weighted_objectives(spec)
    if len(names) != 2:
        raise SpecError(
            f"the merging builder interpolates between two runs: it needs two weighted "
            f"objectives, the spec has {len(names)} ({', '.join(names)}); use sweep or conditioned"
        )
    ends = sweep_specs(spec, simplex_grid(2, 2))  # (0.1, 0.9) and (0.9, 0.1)
    sources: list[str] = []
    for end in ends:
        log(f"training merge source {end.tracking.run_name}")
        source = run(
            end.updated(**{"tracking.run_name": f"merge source {end.tracking.run_name}"}),
            progress=progress,
            log=log,
        ).run_id
        assert source is not None  # a run that returned was tracked
        sources.append(source)
    coefficients = [round(float(c), 4) for c in np.linspace(0.0, 1.0, points)]
    grid = merge_grid(
        sources[0], sources[1], coefficients, "linear", run_name=spec.tracking.run_name, log=log
    )
    return BuiltFront("merging", grid.parent_run_id, grid.front, grid.base_hypervolume, sources)


def _search(spec: RunSpec, points: int, seed: int, log: Log, progress: bool) -> BuiltFront:
    from workbench import tracking
    from workbench.studies.search import run_search
    from workbench.studies.sweep import weighted_objectives

    space = {
        f"objectives.{name}.weight": {"low": 0.1, "high": 0.9} for name in weighted_objectives(spec)
    }
    settings = {"space": space, "population_size": max(2, min(points, 8)), "seed": seed}
    result = run_search(spec, settings, trials=points, log=log, progress=progress)
    client = tracking.connect(spec.tracking.uri)
    trials = tracking.runs_frame(
        client, spec.tracking.experiment, parent_run_id=result.parent_run_id, status=None
    )
    return BuiltFront(
        "search",
        result.parent_run_id,
        result.front,
        result.base_hypervolume,
        [t["run_id"] for t in trials],
    )


def _mgda(spec: RunSpec, points: int, seed: int, log: Log, progress: bool) -> BuiltFront:
    from workbench.fronts.conditioned import mo_sft_variant
    from workbench.studies.sweep import design_points, run_sweep, weighted_objectives

    grid = design_points("grid", len(weighted_objectives(spec)), points)
    region_spec = mo_sft_variant(spec, "mgda-sft", neighbours=[list(p) for p in grid])
    result = run_sweep(region_spec, grid, log=log, progress=progress)
    return BuiltFront(
        "mgda",
        result.parent_run_id,
        result.front,
        result.base_hypervolume,
        [r.run_id for r in result.runs if r.run_id],
    )


BUILDERS: dict[str, FrontBuilder] = {
    b.name: b
    for b in [
        FrontBuilder(
            "sweep", "one mo-sft run per weight point: N trainings; the reference front", _sweep
        ),
        FrontBuilder(
            "conditioned",
            "one conditioned-sft run evaluated at every point: 1 training, "
            "N evaluations; points added later cost an evaluation",
            _conditioned,
        ),
        FrontBuilder(
            "merging",
            "two mo-sft runs at the ends, linearly merged at N coefficients: 2 "
            "trainings, N evaluations; two objectives",
            _merging,
        ),
        FrontBuilder(
            "search",
            "an Optuna study over the training weights: up to N trainings, "
            "dominated ones pruned early",
            _search,
        ),
        FrontBuilder(
            "mgda",
            "one mgda-sft run per weight point (MGDA in the point's region): N "
            "trainings at about K + 1 backward passes a step for K terms",
            _mgda,
        ),
    ]
}


def check_builder(name: str) -> None:
    if name not in BUILDERS:
        raise SpecError(f"builder = {name!r}: unknown; allowed: {', '.join(BUILDERS)}")


def build_front(
    builder: str,
    spec: RunSpec | dict[str, Any],
    points: int,
    *,
    seed: int = 0,
    log: Log = print,
    progress: bool = False,
) -> BuiltFront:
    """Build a front of ``points`` points with ``builder`` (a name in :data:`BUILDERS`) and say
    what it cost."""
    check_builder(builder)
    from workbench import tracking

    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    # The parent is named after its builder (``mgda front``), what tells two fronts of one
    # spec apart in the runs table, unless the user named it.
    spec = spec.updated(**{"tracking.run_name": spec.tracking.run_name or f"{builder} front"})
    started = time.perf_counter()
    built = BUILDERS[builder].build(spec, points, seed, log, progress)
    seconds = time.perf_counter() - started
    client = tracking.connect(spec.tracking.uri)
    client.set_tag(built.parent_run_id, TAG_BUILDER, builder)
    steps = sum(
        tracking.last_steps(client, run_id).get(LOSS_KEY, 0) for run_id in built.training_run_ids
    )
    return dataclasses.replace(built, training_steps=steps, seconds=seconds)
