"""Pareto fronts of finished runs, read back from MLflow: the one place a front is built.

The runs' own specs (logged as params) say each objective's direction and reference point,
so a front is rebuilt from the store alone, wherever it is shown: a sweep's parent run
(:mod:`workbench.studies.sweep`), ``workbench front``, a notebook or a widget.
:func:`front_from_runs` computes it (via :func:`workbench.fronts.pareto.compute_front`);
:func:`sweep_children` and :func:`start_point` read what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from workbench import tracking
from workbench.fronts.pareto import ParetoFront, compute_front, hypervolume
from workbench.spec import mlflow_names
from workbench.spec.errors import WorkbenchError
from workbench.spec.mlflow_names import FRONT_ARTIFACT, OBJECTIVE_PREFIX
from workbench.spec.run_spec import COST_DIRECTIONS

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from mlflow.tracking import MlflowClient

    from workbench.tracking.recorder import RunRecorder


def objective_declarations(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {"direction": ..., "reference": float | None}} from a run's spec params."""
    out: dict[str, dict[str, str]] = {}
    for key, value in run["params"].items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "objectives":
            entry = out.setdefault(parts[1], {})
            entry[parts[2]] = value
    decls = {}
    for name, fields in out.items():
        ref = fields.get("reference")
        decls[name] = {
            "direction": fields.get("direction", "max"),
            "reference": None if ref in (None, "None") else float(ref),
            "weight": float(fields.get("weight", "nan")),
        }
    return decls


def run_label(run: dict[str, Any]) -> str:
    """A run's label on fronts: its name (else its id), after its author's name when the run
    has one (``workbench.author``: every student's run on a class board's one front)."""
    name = run.get("run_name") or run["run_id"]
    author = run["tags"].get(mlflow_names.TAG_AUTHOR) if run.get("tags") else None
    return f"{author}: {name}" if author else str(name)


def front_from_runs(runs: list[dict[str, Any]], names: list[str] | None = None) -> ParetoFront:
    """The front over ``runs`` (dicts from ``tracking.runs_frame``) in objectives ``names``.

    Defaults to the objectives every run has. Runs missing one of ``names`` are left out.
    A name ``cost:<name>`` (``cost:trainable_params``, ``cost:peak_mem_mb``, ``cost:step_s``,
    ``cost:tokens_per_s``, ...) is a cost every run records, declared as an objective or not:
    quality against cost on one front, in the direction that cost is better.
    """
    if not runs:
        raise WorkbenchError(
            "no finished runs to build a front from; run `workbench demo` or `workbench run SPEC`"
        )
    decls = objective_declarations(runs[0])
    if names is None:
        common = set(runs[0]["objectives"])
        for r in runs[1:]:
            common &= set(r["objectives"])
        names = [n for n in decls if n in common] or sorted(common)
    if not names:
        raise WorkbenchError(
            "the runs share no objective; pass --objective names that all runs logged"
        )
    runs = [with_cost_axes(r) for r in runs]
    kept = [r for r in runs if all(n in r["objectives"] for n in names)]
    if not kept:
        logged = sorted({n for r in runs for n in r["objectives"]})
        missing = [n for n in names if not any(n in r["objectives"] for r in runs)]
        what = (
            f"no run logged objective {', '.join(repr(n) for n in missing)}"
            if missing
            else f"no run logged all of {', '.join(repr(n) for n in names)}"
        )
        raise WorkbenchError(f"{what}; the runs' objectives are: {', '.join(logged) or 'none'}")
    points = np.array([[r["objectives"][n] for n in names] for r in kept], dtype=float)
    directions = [decls.get(n, {}).get("direction", _default_direction(n)) for n in names]
    refs = [decls.get(n, {}).get("reference") for n in names]
    reference = None if any(v is None for v in refs) else refs
    labels = [run_label(r) for r in kept]
    return compute_front(points, directions, reference=reference, names=names, labels=labels)


def with_cost_axes(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with its recorded costs among its objectives as ``cost:<name>`` axes (a record
    without costs unchanged)."""
    costs = {f"cost:{name}": value for name, value in run.get("costs", {}).items()}
    return {**run, "objectives": {**run["objectives"], **costs}}


def _default_direction(name: str) -> str:
    """An undeclared axis: a cost's own direction, else ``max``."""
    if name.startswith("cost:"):
        return COST_DIRECTIONS.get(name[len("cost:") :], "min")
    return "max"


def sweep_children(
    client: MlflowClient, parent_run_id: str, order: list[str] | None = None
) -> list[dict[str, Any]]:
    """The FINISHED children of a sweep's parent run (dicts from ``tracking.runs_frame``).

    ``order`` (child run ids) sets their order, e.g. the sweep's points; children not in it
    follow, oldest first.
    """
    parent = client.get_run(parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id).name
    runs: list[dict[str, Any]] = tracking.runs_frame(
        client, experiment, parent_run_id=parent_run_id
    )
    if order is not None:
        rank = {run_id: i for i, run_id in enumerate(order)}
        runs.sort(key=lambda r: rank.get(r["run_id"], len(rank)))
    return runs


def objective_trajectory(
    client: MlflowClient, run_id: str, names: list[str]
) -> list[tuple[int, dict[str, float]]]:
    """A run's path in objective space: ``(step, {name: value})`` per evaluation, by step.

    Step 0 is the base model, before training; names a run did not log at a step are left out.
    """
    by_step: dict[int, dict[str, float]] = {}
    for name in names:
        for step, value in tracking.metric_history(client, run_id, f"{OBJECTIVE_PREFIX}{name}"):
            by_step.setdefault(step, {})[name] = value
    return sorted(by_step.items())


def start_point(client: MlflowClient, run_id: str, names: list[str]) -> dict[str, float]:
    """The objectives a run logged at its first evaluation (step 0: the base model, untrained)."""
    trajectory = objective_trajectory(client, run_id, names)
    return trajectory[0][1] if trajectory else {}


def point_hypervolume(front: ParetoFront, values: dict[str, float]) -> float:
    """Hypervolume of one point (e.g. the base model's) against ``front``'s reference point;
    NaN when the front has no reference or the point lacks one of its objectives."""
    if front.reference is None or any(n not in values for n in front.names):
        return float("nan")
    point = np.array([[values[n] for n in front.names]], dtype=float)
    return hypervolume(point, front.directions, front.reference)


def record_front(
    recorder: RunRecorder,
    front: ParetoFront,
    base_hypervolume: float,
    title: str,
    prefix: str = "sweep",
    base: dict[str, float] | None = None,
) -> go.Figure:
    """Record a study's front on its parent run (``<prefix>/hypervolume``,
    ``<prefix>/base_hypervolume``, ``<prefix>/front_size``, ``front.json`` and the plot under
    ``front/``); returns the plotly figure, with the base model's point (``base``, its
    objective values) drawn when given. ``prefix`` is ``sweep`` for sweeps and merge grids,
    ``study`` for searches."""
    import tempfile
    from pathlib import Path

    from workbench.fronts import plots

    recorder.log_metrics(
        {
            f"{prefix}/hypervolume": front.hypervolume,
            f"{prefix}/base_hypervolume": base_hypervolume,
            f"{prefix}/front_size": float(front.mask.sum()),
        },
        step=0,
    )
    recorder.log_table(front.table(), FRONT_ARTIFACT)
    figure = plots.front_figure(front, title=title, base=base)
    with tempfile.TemporaryDirectory() as tmp:
        # Self-contained: MLflow's artifact viewer shows the one file.
        html = plots.write_html(figure, Path(tmp) / "front.html", plotlyjs="embed")
        recorder.log_artifacts(str(html.parent), "front")
    return figure
