"""Weight sweeps: one run per point of a grid of training weights, nested under a parent run.

Each child run is an ordinary run (same runner, same tracking); the parent records the
sweep's front, its hypervolume against the task's reference point, and the front's plot.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench import plots, tracking
from workbench.errors import SpecError
from workbench.pareto import ParetoFront, compute_front, hypervolume
from workbench.runner import RunResult, run
from workbench.spec import RunSpec


@dataclass
class SweepResult:
    parent_run_id: str
    weights: list[float]
    runs: list[RunResult]
    front: ParetoFront
    base_objectives: dict[str, float]
    base_hypervolume: float
    figure_path: Path | None = None
    extra: dict = field(default_factory=dict)


def weight_grid(points: int, low: float = 0.1, high: float = 0.9) -> list[float]:
    """Evenly spaced training weights for the first objective (the second gets 1 - w)."""
    if points < 2:
        raise SpecError(f"a sweep needs at least 2 points, got {points}")
    return [round(float(w), 4) for w in np.linspace(low, high, points)]


def sweep_specs(spec: RunSpec, weights: list[float]) -> list[RunSpec]:
    """Copies of ``spec`` with the first two weighted objectives at (w, 1 - w)."""
    weighted = [o for o in spec.objectives if o.term is not None]
    if len(weighted) < 2:
        raise SpecError(
            "a weight sweep needs two objectives with a training term; the spec has "
            f"{[o.name for o in weighted]}. Use a multi-objective task such as 'order'"
        )
    first, second = weighted[0].name, weighted[1].name
    specs = []
    for w in weights:
        objectives = []
        for o in spec.objectives:
            data = o.model_dump(mode="json")
            if o.name == first:
                data["weight"] = w
            elif o.name == second:
                data["weight"] = round(1.0 - w, 4)
            objectives.append(data)
        name = f"{first}={w:g}"
        specs.append(spec.updated(objectives=objectives, **{"tracking.run_name": name}))
    return specs


def run_sweep(spec: RunSpec, weights: list[float], *, progress: bool = False, log=print,
              figure_path: str | Path | None = None) -> SweepResult:
    """Run every weight point in this process; return the front and its hypervolume."""
    specs = sweep_specs(spec, weights)
    client = tracking.connect(spec.tracking.uri)
    parent_spec = spec.updated(**{"tracking.run_name": spec.tracking.run_name or "weight-sweep"})
    parent_id = tracking.start_run(client, parent_spec, extra_tags={"workbench.kind": "sweep"})
    parent = tracking.RunRecorder(client, parent_id)
    results: list[RunResult] = []
    with parent:
        for i, child in enumerate(specs):
            log(f"[{i + 1}/{len(specs)}] {child.tracking.run_name}")
            results.append(run(child, parent_run_id=parent_id, progress=progress, log=log))
        names = [o.name for o in spec.objectives if o.term is not None][:2]
        names += [o.name for o in spec.objectives if o.name not in names]
        directions = [spec.objective(n).direction for n in names]
        refs = [spec.objective(n).reference for n in names]
        reference = None if any(r is None for r in refs) else refs
        points = np.array([[r.objectives[n] for n in names] for r in results], dtype=float)
        front = compute_front(points, directions, reference=reference, names=names,
                              labels=[s.tracking.run_name for s in specs])
        base = results[0].trajectory[0][1] if results[0].trajectory else {}
        base_hv = (hypervolume(np.array([[base[n] for n in names]]), directions, reference)
                   if reference is not None and all(n in base for n in names) else float("nan"))
        parent.log_metrics({"sweep/hypervolume": front.hypervolume,
                            "sweep/base_hypervolume": base_hv,
                            "sweep/front_size": float(front.mask.sum())}, step=0)
        parent.log_table(front.table(), "front.json")
        figure = plots.front_figure(front, title=f"Pareto front of the weight sweep ({spec.data.source})")
        with tempfile.TemporaryDirectory() as tmp:
            html = plots.write_html(figure, Path(tmp) / "front.html")
            parent.log_artifacts(str(html.parent), "front")
        saved = plots.write_html(figure, figure_path) if figure_path is not None else None
    return SweepResult(parent_id, list(weights), results, front, base, base_hv, saved)
