"""Pareto fronts of tracked runs: read objectives and their declarations back from MLflow.

The runs' own specs (logged as params) say each objective's direction and reference point,
so a front can be rebuilt from the store alone, by the CLI, a notebook or a widget.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import WorkbenchError
from workbench.pareto import ParetoFront, compute_front


def objective_declarations(run: dict) -> dict[str, dict]:
    """{name: {"direction": ..., "reference": float | None}} from a run's spec params."""
    out: dict[str, dict] = {}
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


def front_from_runs(runs: list[dict], names: list[str] | None = None) -> ParetoFront:
    """The front over ``runs`` (dicts from ``tracking.runs_frame``) in objectives ``names``.

    Defaults to the objectives every run has. Runs missing one of ``names`` are left out.
    """
    if not runs:
        raise WorkbenchError("no finished runs to build a front from; run `workbench demo` or `workbench run SPEC`")
    decls = objective_declarations(runs[0])
    if names is None:
        common = set(runs[0]["objectives"])
        for r in runs[1:]:
            common &= set(r["objectives"])
        names = [n for n in decls if n in common] or sorted(common)
    if not names:
        raise WorkbenchError("the runs share no objective; pass --objective names that all runs logged")
    kept = [r for r in runs if all(n in r["objectives"] for n in names)]
    points = np.array([[r["objectives"][n] for n in names] for r in kept], dtype=float)
    directions = [decls.get(n, {}).get("direction", "max") for n in names]
    refs = [decls.get(n, {}).get("reference") for n in names]
    reference = None if any(v is None for v in refs) else refs
    labels = [r.get("run_name") or r["run_id"] for r in kept]
    return compute_front(points, directions, reference=reference, names=names, labels=labels)
