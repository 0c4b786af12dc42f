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
:mod:`.recorder` (recording one run), :mod:`.reading` (reading runs back) and
:mod:`.conventions` (names and MLflow's limits); the names below are the public API.
"""

from __future__ import annotations

from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from workbench.tracking.conventions import (
    AUTHOR_ENV,
    DECLARED_DEAD_TAG,
    END_STATUSES,
    ERROR_ARTIFACT,
    FALLBACK_FOLDER,
    HEARTBEAT_TAG,
    OBJECTIVE_PREFIX,
    SPEC_ARTIFACT,
    TAG_ADAPTER,
    TAG_AUTHOR,
    TAG_ERROR,
    TAG_METHOD,
    TAG_OPTIMIZER,
    TAG_PARENT,
    TAG_WITHDRAWN_VERDICT,
)
from workbench.tracking.phase import PHASE_TAG, PhaseBeat
from workbench.tracking.reading import last_steps, metric_history, run_record, runs_frame
from workbench.tracking.recorder import RunRecorder, fallback_dir, replay_fallback
from workbench.tracking.store import (
    connect,
    declare_dead,
    end_run,
    ensure_experiment,
    start_run,
    withdraw_dead_verdict,
)

__all__ = [
    "DECLARED_DEAD_TAG",
    "END_STATUSES",
    "ERROR_ARTIFACT",
    "FALLBACK_FOLDER",
    "HEARTBEAT_TAG",
    "MAX_PARAM_VAL_LENGTH",
    "AUTHOR_ENV",
    "OBJECTIVE_PREFIX",
    "PHASE_TAG",
    "PhaseBeat",
    "SPEC_ARTIFACT",
    "TAG_ADAPTER",
    "TAG_ERROR",
    "TAG_METHOD",
    "TAG_OPTIMIZER",
    "TAG_AUTHOR",
    "TAG_PARENT",
    "TAG_WITHDRAWN_VERDICT",
    "RunRecorder",
    "connect",
    "declare_dead",
    "end_run",
    "ensure_experiment",
    "withdraw_dead_verdict",
    "fallback_dir",
    "last_steps",
    "metric_history",
    "replay_fallback",
    "run_record",
    "runs_frame",
    "start_run",
]
