"""MLflow tracking: connect to the store, start runs from a RunSpec, record metrics, read back.

Names follow DESIGN.md ("Names in MLflow"): tags ``workbench.method``, ``workbench.adapter``,
``workbench.optimizer``, ``workbench.parent``; objectives as ``objective/<name>`` metrics.
Every run ends FINISHED, FAILED (with the error as tag ``workbench.error`` and artifact
``error.txt``) or KILLED, never stuck in RUNNING.

Metrics go through :class:`RunRecorder`: ``log_metrics`` only appends to an in-memory buffer
and a daemon thread sends it with ``log_batch``, so a training step never waits on the store.
If the store cannot be reached the points stay buffered and are retried; at ``finish`` any
that still cannot be sent are written to a JSONL file under the local store folder
(:func:`replay_fallback` sends them later), so no data is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    _validate_metric_name,
)

from workbench import paths
from workbench.errors import TrackingError
from workbench.spec import RunSpec

__all__ = [
    "END_STATUSES",
    "TAG_ADAPTER",
    "TAG_ERROR",
    "TAG_METHOD",
    "TAG_OPTIMIZER",
    "TAG_PARENT",
    "RunRecorder",
    "connect",
    "end_run",
    "fallback_dir",
    "ensure_experiment",
    "metric_history",
    "replay_fallback",
    "runs_frame",
    "start_run",
]

_log = logging.getLogger(__name__)

# Refreshed by every open recorder, so a dead run can be told from a slow one.
HEARTBEAT_TAG = "workbench.heartbeat"

TAG_METHOD = "workbench.method"
TAG_ADAPTER = "workbench.adapter"
TAG_OPTIMIZER = "workbench.optimizer"
TAG_PARENT = "workbench.parent"
TAG_ERROR = "workbench.error"
OBJECTIVE_PREFIX = "objective/"
SPEC_ARTIFACT = "spec.yaml"
ERROR_ARTIFACT = "error.txt"
FALLBACK_FOLDER = "unsent"
END_STATUSES = ("FINISHED", "FAILED", "KILLED")

# How hard MLflow's HTTP client tries before giving up. Its defaults (7 retries, backoff
# factor 2) keep a call to a stopped server retrying for about four minutes; a workbench talks
# to a server on the same machine, so a few seconds is enough. Set only when the user has not.
_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# Loggers that print on every first use of a sqlite store (schema creation and migrations).
_NOISY_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")


# -- connecting ------------------------------------------------------------------------------


def connect(uri: str | None = None, *, probe_timeout_s: float = 5.0) -> MlflowClient:
    """A client for the store that :func:`workbench.paths.tracking_uri` picks for ``uri``.

    A local sqlite store gets its folder created. An http(s) server is probed once with a
    short timeout, so a stopped server fails in seconds with :class:`TrackingError` instead of
    MLflow retrying for minutes. Unless the user set them, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
    and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` are lowered for the whole process for the same
    reason (a server that dies mid-run fails a flush in about 3 s, and the recorder retries).
    """
    resolved = paths.tracking_uri(uri)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if resolved.startswith("sqlite:///"):
        db = Path(resolved[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(
                f"cannot create the folder of the MLflow store {resolved}: {err}; "
                "point MLFLOW_TRACKING_URI at a writable location"
            ) from None
    elif resolved.startswith(("http://", "https://")):
        for name, value in _HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)
        _probe_server(resolved, probe_timeout_s)
    try:
        with warnings.catch_warnings():
            # MLflow 3.17's sqlalchemy store uses a loader strategy SQLAlchemy deprecates.
            warnings.filterwarnings("ignore", message=".*noload.*")
            client = MlflowClient(tracking_uri=resolved)
            if resolved.startswith("sqlite:"):
                # Opening the store creates or migrates the schema; fail here, not mid-run.
                client.search_experiments(max_results=1)
    except MlflowException as err:
        raise TrackingError(
            f"cannot open the MLflow store {resolved}: {_one_line(err)}; use a sqlite URI "
            "(sqlite:///path/to/mlflow.db), a running server (`workbench ui`), or unset "
            "MLFLOW_TRACKING_URI to use the local store"
        ) from None
    return client


def _probe_server(uri: str, timeout_s: float) -> None:
    """One request, no retries: raise TrackingError unless an MLflow server answers."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    fix = "start it with `workbench ui` or unset MLFLOW_TRACKING_URI to use the local store"
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "POST",
            json={"max_results": 1},
            max_retries=0,
            backoff_factor=0,
            backoff_jitter=0,
            timeout=timeout_s,
        )
    except Exception as err:
        raise TrackingError(
            f"cannot reach the MLflow server at {uri}: {_one_line(err)}; {fix}"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"the MLflow server at {uri} answered HTTP {response.status_code} "
            f"({response.text[:200].strip()!r}); check the URI and credentials, or {fix}"
        )


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (or restored, if deleted) when needed.

    In a local sqlite store a new experiment keeps its artifacts next to ``mlflow.db``
    (``artifacts/<run id>/artifacts/...``: MLflow puts run folders straight under the
    experiment's location), never under the working folder.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=paths.artifact_root(client.tracking_uri)
        )
    except MlflowException:
        # Another process created it between our look-up and create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# -- starting and ending runs ----------------------------------------------------------------


def start_run(
    client: MlflowClient,
    spec: RunSpec,
    *,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str:
    """Create the run for ``spec``: tags, the spec as params and as ``spec.yaml``. Returns its id.

    With ``parent_run_id`` the run is a child (tag ``workbench.parent`` and MLflow's own
    ``mlflow.parentRunId``, so the UI nests it under its sweep).
    """
    experiment_id = ensure_experiment(client, spec.tracking.experiment)
    tags: dict[str, str] = {
        TAG_METHOD: spec.method.name,
        TAG_ADAPTER: spec.adapter.name,
        TAG_OPTIMIZER: spec.optimizer.name,
    }
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    tags.update(spec.tracking.tags)
    tags.update(extra_tags or {})
    tags = {_key(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
    run = client.create_run(experiment_id, tags=tags, run_name=spec.tracking.run_name)
    run_id = run.info.run_id
    params = [
        Param(_key(k), _truncate(v, MAX_PARAM_VAL_LENGTH)) for k, v in spec.flat_params().items()
    ]
    for chunk in _chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)
    client.log_text(run_id, spec.to_yaml(), SPEC_ARTIFACT)
    return run_id


def end_run(client: MlflowClient, run_id: str, status: str, error: str | None = None) -> None:
    """Mark a run ended from outside (e.g. its launched process died), with the error if any."""
    _check_status(status)
    if error:
        _record_error(client, run_id, error, details=error)
    client.set_terminated(run_id, status)


# -- recording a run -------------------------------------------------------------------------


_live_recorders: set[RunRecorder] = set()
_live_lock = threading.Lock()


class RunRecorder:
    """Records one run: buffered metrics, tags, artifacts, and how it ended.

    ``log_metrics`` is cheap (no I/O on the calling thread); a daemon thread sends the buffer
    with ``log_batch`` every ``flush_every_s`` seconds, or sooner once it holds more than
    ``max_buffer`` points. Use as a context manager: leaving normally ends the run FINISHED,
    an exception FAILED (with the error), KeyboardInterrupt or SystemExit KILLED; the
    exception propagates. A recorder still open when the interpreter exits is ended KILLED.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        flush_every_s: float = 2.0,
        max_buffer: int = 1000,
        heartbeat_every_s: float = 5.0,
        skip_through_step: int | Mapping[str, int] = -1,
    ):
        self.client = client
        self.run_id = run_id
        self.flush_every_s = float(flush_every_s)
        self.max_buffer = int(max_buffer)
        self.heartbeat_every_s = float(heartbeat_every_s)
        # A resumed run replays the steps between its checkpoint and the last step the
        # store already holds; those points are identical and are not logged twice. Per key
        # (``last_steps``): a run killed part-way through sending one step's metrics gets the
        # missing ones at that step, the stored ones not again.
        if isinstance(skip_through_step, Mapping):
            self._skip_by_key, self._skip_default = dict(skip_through_step), -1
        else:
            self._skip_by_key, self._skip_default = {}, int(skip_through_step)
        # The first beat comes one interval after the start (the run's start time counts
        # as a beat for the reaper until then).
        self._last_heartbeat = time.time()
        self.fallback_path: Path | None = None
        self.last_flush_error: str | None = None
        self._metrics: list[Metric] = []
        self._tags: dict[str, str] = {}
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._finished = False
        self._warned = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"workbench-recorder-{run_id[:8]}", daemon=True
        )
        self._thread.start()
        with _live_lock:
            _live_recorders.add(self)

    # -- metrics ---------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer one value per key at ``step`` (values are converted with ``float``)."""
        if self._finished:
            raise TrackingError(f"run {self.run_id} is already finished; metrics cannot be added")
        timestamp = int(time.time() * 1000)
        points = []
        for name, value in metrics.items():
            key = _key(name)
            if step > self._skip_by_key.get(key, self._skip_default):
                points.append(Metric(key, float(value), timestamp, int(step)))
        if not points:
            return
        with self._buffer_lock:
            self._metrics.extend(points)
            full = len(self._metrics) >= self.max_buffer
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Metric points and tags not yet stored."""
        with self._buffer_lock:
            return len(self._metrics) + len(self._tags)

    def flush(self) -> bool:
        """Send everything buffered now. False (and the points kept) if the store failed."""
        with self._flush_lock:
            with self._buffer_lock:
                metrics, self._metrics = self._metrics, []
                tags, self._tags = self._tags, {}
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            sent_tags = 0
            sent_metrics = 0
            try:
                for chunk in _chunks(tag_list, MAX_PARAMS_TAGS_PER_BATCH):
                    self.client.log_batch(self.run_id, tags=chunk, synchronous=True)
                    sent_tags += len(chunk)
                for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
                    self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
                    sent_metrics += len(chunk)
            except Exception as err:
                # Put back what was not sent, ahead of anything logged meanwhile.
                with self._buffer_lock:
                    self._metrics[:0] = metrics[sent_metrics:]
                    unsent = {t.key: t.value for t in tag_list[sent_tags:]}
                    unsent.update(self._tags)  # newer values win
                    self._tags = unsent
                self.last_flush_error = _one_line(err)
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "could not send metrics of run %s to %s (%s); keeping them buffered "
                        "and retrying",
                        self.run_id,
                        self.client.tracking_uri,
                        self.last_flush_error,
                    )
                return False
            self.last_flush_error = None
            return True

    def _beat(self) -> None:
        now = time.time()
        if now - self._last_heartbeat >= self.heartbeat_every_s:
            self._last_heartbeat = now
            with self._buffer_lock:
                self._tags[HEARTBEAT_TAG] = f"{now:.3f}"

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(min(self.flush_every_s, self.heartbeat_every_s))
            self._wake.clear()
            if self._stop.is_set():
                break
            self._beat()
            if self.pending and not self.flush():
                # Back off: do not hammer a store that just failed, whatever wakes us.
                self._stop.wait(self.flush_every_s)

    # -- tags and artifacts ----------------------------------------------------------------

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set tags now; if the store cannot be reached they are kept and sent with metrics."""
        clean = {_key(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        with self._buffer_lock:
            self._tags.update(clean)
        self.flush()

    def log_text(self, text: str, artifact_file: str) -> None:
        self._artifact_call("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_dict(self, d: dict[str, Any], artifact_file: str) -> None:
        self._artifact_call("log_dict", self.client.log_dict, self.run_id, d, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (``.json``), shown as a table in the run's UI.

        MLflow appends to a table already logged under the same name, so logging samples at
        each evaluation to one file (with a ``step`` column) builds one table.
        """
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        data = {c: [row.get(c) for row in rows] for c in columns}
        with warnings.catch_warnings():
            # MLflow 3.17's log_table trips a pandas 3 deprecation warning on every call.
            warnings.filterwarnings("ignore", message=".*select_dtypes.*")
            self._artifact_call(
                "log_table", self.client.log_table, self.run_id, data, artifact_file
            )

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        self._artifact_call(
            "log_artifacts", self.client.log_artifacts, self.run_id, str(local_dir), artifact_path
        )

    def _artifact_call(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except MlflowException as err:
            raise TrackingError(
                f"{what} for run {self.run_id} failed at {self.client.tracking_uri}: "
                f"{_one_line(err)}"
            ) from err

    # -- ending ----------------------------------------------------------------------------

    def finish(
        self, status: str = "FINISHED", error: str | None = None, *, details: str | None = None
    ) -> None:
        """Flush, record ``error`` (tag ``workbench.error``, artifact ``error.txt`` holding
        ``details`` or the error) and end the run with ``status``. A second call does nothing.

        What cannot be sent (metrics, tags, and the end itself if ending fails) goes to a
        JSONL file under the local store folder, named in a RuntimeWarning and kept in
        ``self.fallback_path``; :func:`replay_fallback` sends it later. Never raises for a
        store problem, so it cannot hide the exception that ended a run.
        """
        _check_status(status)
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        with _live_lock:
            _live_recorders.discard(self)
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(5.0, 3 * self.flush_every_s))
        sent = self.flush()
        ended = False
        try:
            if error:
                _record_error(self.client, self.run_id, error, details=details or error)
            self.client.set_terminated(self.run_id, status)
            ended = True
        except Exception as err:
            self.last_flush_error = _one_line(err)
        if not (sent and ended):
            end = None if ended else {"status": status, "error": error, "details": details}
            self._write_fallback(end)

    def _write_fallback(self, end: dict[str, Any] | None) -> None:
        with self._buffer_lock:
            metrics, self._metrics = self._metrics, []
            tags, self._tags = self._tags, {}
        path = fallback_dir(self.client.tracking_uri) / f"{self.run_id}.jsonl"
        base = {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}
        records = [
            {
                **base,
                "kind": "metric",
                "key": m.key,
                "value": m.value,
                "step": m.step,
                "timestamp": m.timestamp,
            }
            for m in metrics
        ]
        records += [{**base, "kind": "tag", "key": k, "value": v} for k, v in tags.items()]
        if end is not None:
            records.append({**base, "kind": "end", **end, "time": int(time.time() * 1000)})
        what = f"{len(metrics)} metric points, {len(tags)} tags" + (
            f" and the end status ({end['status']})" if end else ""
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        except OSError as err:
            warnings.warn(
                f"MLflow store {self.client.tracking_uri} failed ({self.last_flush_error}) and "
                f"the fallback file {path} cannot be written ({err}): {what} of run "
                f"{self.run_id} are lost",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self.fallback_path = path
        warnings.warn(
            f"MLflow store {self.client.tracking_uri} failed ({self.last_flush_error}): {what} "
            f"of run {self.run_id} were written to {path}; send them later with "
            f"workbench.tracking.replay_fallback('{path}')",
            RuntimeWarning,
            stacklevel=3,
        )

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, Exception):
            summary = f"{exc_type.__name__}: {exc}"
            details = "".join(traceback.format_exception(exc_type, exc, tb))
            self.finish("FAILED", summary, details=details)
        else:  # KeyboardInterrupt, SystemExit, GeneratorExit
            self.finish("KILLED")
        return False


@atexit.register
def _kill_open_recorders() -> None:
    with _live_lock:
        open_now = list(_live_recorders)
    for recorder in open_now:
        with contextlib.suppress(Exception):  # interpreter shutdown: never raise from here
            recorder.finish("KILLED")


def fallback_dir(uri: str) -> Path:
    """Where unsent points go: next to a sqlite store's db, else under the local store folder."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).resolve().parent / FALLBACK_FOLDER
    return paths.default_store_dir() / FALLBACK_FOLDER


def replay_fallback(path: str | os.PathLike[str], client: MlflowClient | None = None) -> str:
    """Send a fallback file written by :meth:`RunRecorder.finish`, then delete it.

    Uses ``client`` or a client for the URI recorded in the file. Returns the run id.
    """
    path = Path(path)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not lines:
        path.unlink()
        return ""
    run_id = lines[0]["run_id"]
    client = client or connect(lines[0]["tracking_uri"])
    metrics = [
        Metric(d["key"], d["value"], d["timestamp"], d["step"])
        for d in lines
        if d["kind"] == "metric"
    ]
    tags = [RunTag(d["key"], d["value"]) for d in lines if d["kind"] == "tag"]
    for chunk in _chunks(tags, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)
    for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)
    for end in (d for d in lines if d["kind"] == "end"):
        if end.get("error"):
            _record_error(client, run_id, end["error"], details=end.get("details") or end["error"])
        client.set_terminated(run_id, end["status"], end_time=end.get("time"))
    path.unlink()
    return run_id


# -- reading back ----------------------------------------------------------------------------


def runs_frame(
    client: MlflowClient,
    experiment: str,
    *,
    parent_run_id: str | None = None,
    status: str | None = "FINISHED",
) -> list[dict[str, Any]]:
    """One dict per run of ``experiment`` (oldest first), filtered by parent and status.

    Keys: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (ms),
    ``tags``, ``params``, ``metrics`` (latest value of each) and ``objectives``
    (``{name: latest value of objective/<name>}``). A missing experiment gives ``[]``;
    ``status=None`` keeps every status.
    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    filters = []
    if status:
        _check_status(status, allow_running=True)
        filters.append(f"attributes.status = '{status}'")
    if parent_run_id:
        filters.append(f"tags.`{TAG_PARENT}` = '{parent_run_id}'")
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(filters),
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        for run in page:
            metrics = dict(run.data.metrics)
            out.append(
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "status": run.info.status,
                    "start_time": run.info.start_time,
                    "end_time": run.info.end_time,
                    "tags": dict(run.data.tags),
                    "params": dict(run.data.params),
                    "metrics": metrics,
                    "objectives": {
                        k[len(OBJECTIVE_PREFIX) :]: v
                        for k, v in metrics.items()
                        if k.startswith(OBJECTIVE_PREFIX)
                    },
                }
            )
        token = page.token
        if not token:
            return out


def last_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """The last step the store holds for each metric key of a run."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every point of ``key``, sorted by step (then time)."""
    seen = set()
    points = []
    for m in client.get_metric_history(run_id, key):
        ident = (m.step, m.timestamp, m.value)
        if ident not in seen:  # a retried batch the store had already taken
            seen.add(ident)
            points.append(ident)
    points.sort(key=lambda p: (p[0], p[1]))
    return [(step, value) for step, _, value in points]


# -- helpers ---------------------------------------------------------------------------------


def _record_error(client: MlflowClient, run_id: str, error: str, *, details: str) -> None:
    client.set_tag(run_id, TAG_ERROR, _truncate(error, MAX_TAG_VAL_LENGTH))
    client.log_text(run_id, details, ERROR_ARTIFACT)


def _check_status(status: str, *, allow_running: bool = False) -> None:
    allowed = END_STATUSES + (("RUNNING", "SCHEDULED") if allow_running else ())
    if status not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)}, not {status!r}")


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    marker = " ... [truncated] ... "
    head = (limit - len(marker)) // 2
    tail = limit - len(marker) - head
    return value[:head] + marker + value[-tail:]


@functools.lru_cache(maxsize=4096)
def _key(key: str) -> str:
    """``key`` if MLflow accepts it as a metric, param or tag name, else TrackingError.

    Checked on the caller's thread (once per distinct key), so a bad name fails where it is
    logged instead of making every later batch fail in the background.
    """
    key = str(key)
    if len(key) > MAX_ENTITY_KEY_LENGTH:
        raise TrackingError(
            f"MLflow key '{key[:60]}...' is {len(key)} characters; MLflow allows "
            f"{MAX_ENTITY_KEY_LENGTH}"
        )
    try:
        _validate_metric_name(key)
    except MlflowException as err:
        raise TrackingError(f"MLflow rejects the key {key!r}: {_one_line(err)}") from None
    return key


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
