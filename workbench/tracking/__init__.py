"""MLflow tracking: connect to the store, start runs from a RunSpec, record metrics, read back.

Names follow docs/concepts.md ("Names in MLflow"): tags ``workbench.method``, ``workbench.adapter``,
``workbench.optimizer``, ``workbench.parent``; objectives as ``objective/<name>`` metrics.
Every run ends FINISHED, FAILED (with the error as tag ``workbench.error`` and artifact
``error.txt``) or KILLED, never stuck in RUNNING.

Metrics go through :class:`RunRecorder`: ``log_metrics`` only appends to an in-memory buffer
and a daemon thread sends it with ``log_batch``, so a training step never waits on the store.
If the store cannot be reached the points stay buffered and are retried; at ``finish`` any
that still cannot be sent are written to a JSONL file under the local store folder
(:func:`replay_fallback` sends them later), so no data is lost.

One concern per module: :mod:`.store` (connecting, starting and ending runs),
:mod:`.recorder` (recording one run), :mod:`.reading` (reading runs back), :mod:`.phase` (a
launched run's signs of life before it trains) and :mod:`.conventions` (MLflow's limits);
the functions below are the public API. The names the workbench gives things in MLflow are
in :mod:`workbench.spec.mlflow_names`.

They load on first use (PEP 562): reading a tag name imports nothing of MLflow, whose import
alone takes seconds, so the listing commands and fronts answer fast.
"""

from __future__ import annotations

import importlib

# name -> the module of this package that defines it
_SOURCES = {
    "PhaseBeat": "phase",
    "last_steps": "reading",
    "metric_history": "reading",
    "run_record": "reading",
    "runs_frame": "reading",
    "RunRecorder": "recorder",
    "fallback_dir": "recorder",
    "replay_fallback": "recorder",
    "connect": "store",
    "declare_dead": "store",
    "end_run": "store",
    "ensure_experiment": "store",
    "start_run": "store",
    "withdraw_dead_verdict": "store",
    "MAX_PARAM_VAL_LENGTH": "conventions",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'workbench.tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"workbench.tracking.{source}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
