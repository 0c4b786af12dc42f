"""Recording one run: buffered metrics sent by a background thread, tags, artifacts, how it
ended, and the fallback file for what a store outage kept from being sent."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from workbench.running.library_output import ignoring_warning
from workbench.spec import paths
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import FALLBACK_FOLDER, HEARTBEAT_TAG
from workbench.tracking.conventions import (
    check_status,
    chunks,
    one_line,
    record_error,
    truncate,
    valid_key,
)
from workbench.tracking.store import connect, withdraw_dead_verdict

_log = logging.getLogger(__name__)

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
            key = valid_key(name)
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
                for chunk in chunks(tag_list, MAX_PARAMS_TAGS_PER_BATCH):
                    self.client.log_batch(self.run_id, tags=chunk, synchronous=True)
                    sent_tags += len(chunk)
                for chunk in chunks(metrics, MAX_METRICS_PER_BATCH):
                    self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
                    sent_metrics += len(chunk)
            except Exception as err:
                # Put back what was not sent, ahead of anything logged meanwhile.
                with self._buffer_lock:
                    self._metrics[:0] = metrics[sent_metrics:]
                    unsent = {t.key: t.value for t in tag_list[sent_tags:]}
                    unsent.update(self._tags)  # newer values win
                    self._tags = unsent
                self.last_flush_error = one_line(err)
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
            self._take_back_a_dead_verdict()

    def _take_back_a_dead_verdict(self) -> None:
        """This process records the run, so it is alive: a verdict that said otherwise (a
        watcher that could not see the process) is withdrawn and the run is RUNNING again.
        (``finish`` stops this thread before it ends the run, so the two never race.)"""
        try:
            if withdraw_dead_verdict(self.client, self.run_id, reopen=True):
                _log.warning(
                    "run %s was declared dead while it trained; it is RUNNING again", self.run_id
                )
        except Exception as err:  # the store is down: the next beat tries again
            self.last_flush_error = one_line(err)

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
        clean = {valid_key(k): truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        with self._buffer_lock:
            self._tags.update(clean)
        self.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        """Log ``params`` now (MLflow params are written once per run)."""
        fresh = [Param(valid_key(k), str(v)) for k, v in params.items()]
        for batch in chunks(fresh, MAX_PARAMS_TAGS_PER_BATCH):
            self._artifact_call("log_params", self._log_params_now, batch)

    def _log_params_now(self, params: list[Param]) -> None:
        self.client.log_batch(self.run_id, params=params, synchronous=True)

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
        # MLflow 3.17's log_table trips a pandas 3 deprecation warning on every call.
        with ignoring_warning(".*select_dtypes.*"):
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
                f"{one_line(err)}"
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
        check_status(status)
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
            # The run's own ending is the truth: a verdict left by a watcher goes first.
            withdraw_dead_verdict(self.client, self.run_id, reopen=False)
            if error:
                record_error(self.client, self.run_id, error, details=details or error)
            self.client.set_terminated(self.run_id, status)
            ended = True
        except Exception as err:
            self.last_flush_error = one_line(err)
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
    for chunk in chunks(tags, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk, synchronous=True)
    for chunk in chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk, synchronous=True)
    for end in (d for d in lines if d["kind"] == "end"):
        if end.get("error"):
            record_error(client, run_id, end["error"], details=end.get("details") or end["error"])
        client.set_terminated(run_id, end["status"], end_time=end.get("time"))
    path.unlink()
    return run_id
