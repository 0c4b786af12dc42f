"""Background runs: a fresh interpreter in its own process session, tracked in MLflow.

:func:`launch` validates the spec and data here, creates the MLflow run, then starts
``python -m workbench.running.launcher RUN_ID SPEC`` with ``start_new_session=True`` so stopping it
signals its whole process group (data workers, DDP ranks) and nothing else. The process id
and its start time are tags on the run, so :func:`attach` finds the process again after a
notebook kernel restarts, and a recycled PID is not mistaken for the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench import tracking
from workbench.data.sources import load_rows
from workbench.running import allocator, cluster, liveness, preflight
from workbench.running.signals import sigterm_raises_interrupt_for_good
from workbench.spec import registry
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import LOG_TAG, PID_TAG, START_TAG
from workbench.spec.plugins import child_env, import_plugins, plugin_modules, plugin_tags
from workbench.spec.run_spec import RunSpec

TERMINAL = ("FINISHED", "FAILED", "KILLED")


class RunHandle:
    """A launched run: ``status()``, ``wait()``, ``stop()``, ``run_id``."""

    def __init__(
        self,
        run_id: str,
        pid: int,
        process_start: str,
        uri: str | None = None,
        log_path: str | None = None,
        popen: subprocess.Popen | None = None,
    ):
        self.run_id, self.pid, self.process_start = run_id, pid, process_start
        self.uri, self.log_path, self._popen = uri, log_path, popen

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r}, pid={self.pid}, status={self.status()!r})"

    def _client(self):
        return tracking.connect(self.uri)

    def alive(self) -> bool:
        """Whether the run's process still runs. The handle that launched it asks the process
        itself (certain either way); an attached handle asks :func:`liveness.process_alive`,
        which answers False only when the process is gone for certain."""
        if self._popen is not None:
            return self._popen.poll() is None
        return liveness.process_alive(self.pid, self.process_start)

    def status(self) -> str:
        """The MLflow run status; a RUNNING run whose process is gone is ended FAILED first."""
        client = self._client()
        status = client.get_run(self.run_id).info.status
        if status in TERMINAL or self.alive():
            return status
        # The process has exited: whatever it wrote, its ending included, is in the store now.
        status = client.get_run(self.run_id).info.status
        if status not in TERMINAL:
            tracking.declare_dead(
                client,
                self.run_id,
                f"the run's process {self.pid} exited without ending the run; "
                f"see its log {self.log_path}",
            )
            status = "FAILED"
        return status

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the run's process to exit; True once it has.

        Returns as soon as the process exits (no polling interval) when this handle
        launched it; an attached handle checks the process a few times a second.
        """
        if self._popen is not None:
            try:
                self._popen.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return not self.alive()

    def wait(self, timeout: float | None = None, poll_s: float = 0.5) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._popen is not None:
                self._popen.poll()
            status = self.status()
            if status in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.run_id} still {status} after {timeout} s")
            time.sleep(poll_s)

    def stop(self, grace_s: float = 20.0) -> str:
        """SIGTERM the run's process group (it ends KILLED), SIGKILL after ``grace_s``."""
        if self.alive():
            try:
                os.killpg(os.getpgid(self.pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                if self._popen is not None:
                    self._popen.poll()
                time.sleep(0.2)
            # SIGKILL what is left of the group: the leader if it outlived the grace period,
            # and any process it started that outlived it (the group is the run's, as the
            # leader was checked to be this run's process above).
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        client = self._client()
        if client.get_run(self.run_id).info.status not in TERMINAL:
            tracking.end_run(client, self.run_id, "KILLED")
        return client.get_run(self.run_id).info.status


def launch(
    spec: RunSpec | dict, *, parent_run_id: str | None = None, threads: int | None = None
) -> RunHandle:
    """Start ``spec`` in a background process; returns as soon as the run exists.

    ``threads`` sets the process's torch threads (``OMP_NUM_THREADS``), e.g. a share of the
    cores when several runs train side by side; None keeps the environment's setting.
    """
    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    preflight.check(spec)  # a missing data file or model folder fails here, by name
    cluster.check_layout(spec.train)  # a multi-node spec is started by torchrun/srun, not here
    plugins = plugin_modules(spec)  # a method defined in a notebook cell fails here, with the fix
    row_kind = registry.METHODS[spec.method.name].row_kind
    load_rows(spec.data, spec.train.seed, row_kind=row_kind)  # bad data fails before a run exists
    client = tracking.connect(spec.tracking.uri)
    run_id = tracking.start_run(
        client, spec, parent_run_id=parent_run_id, extra_tags=plugin_tags(spec)
    )
    folder = Path(tempfile.mkdtemp(prefix=f"workbench-{run_id[:8]}-"))
    spec_path = folder / "spec.yaml"
    spec_path.write_text(spec.to_yaml(), encoding="utf-8")
    log_path = folder / "run.log"
    env = allocator.preload_environment(child_env(plugins, dict(os.environ)))
    env["MLFLOW_TRACKING_URI"] = client.tracking_uri  # the child must write to the same store
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "workbench.running.launcher", run_id, str(spec_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    # The child sets these itself once it trains; setting them now covers its start-up, so a
    # child that dies while importing is still detected.
    tags = {**liveness.process_tags(popen.pid), LOG_TAG: str(log_path)}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return RunHandle(run_id, popen.pid, tags[START_TAG], client.tracking_uri, str(log_path), popen)


def attach(run_id: str, uri: str | None = None) -> RunHandle:
    """A handle on a launched run, e.g. after a notebook kernel restart."""
    client = tracking.connect(uri)
    try:
        run = client.get_run(run_id)
    except Exception as err:  # MLflow raises its own exception types for missing runs
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    tags = run.data.tags
    if PID_TAG not in tags:
        raise TrackingError(
            f"run {run_id} was not started with workbench.launch; it has no process to attach to"
        )
    return RunHandle(
        run_id,
        int(tags[PID_TAG]),
        tags[START_TAG],
        client.tracking_uri,
        tags.get(LOG_TAG),
    )


def _child_main(run_id: str, spec_path: str) -> int:
    from workbench.running.pipeline import run

    import_plugins()  # the user's methods, metrics and rewards the spec names
    spec = RunSpec.from_file(spec_path)
    try:
        run(spec, run_id=run_id, progress=False, observers=_child_observers(run_id))
    except KeyboardInterrupt:
        _end_if_open(run_id, "KILLED", None)
        return 130
    except BaseException as err:
        _end_if_open(run_id, "FAILED", f"{type(err).__name__}: {err}")
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _child_observers(run_id: str) -> list:
    """Progress lines for the run's log file, and the run's share of the cores (taken now,
    before the model is built: see :mod:`workbench.running.core_share`)."""
    from workbench.running.core_share import CoreShare
    from workbench.running.progress import ProgressLines

    return [ProgressLines(), CoreShare(tracking.connect(), run_id)]


def _end_if_open(run_id: str, status: str, error: str | None) -> None:
    client = tracking.connect()
    if client.get_run(run_id).info.status not in TERMINAL:
        tracking.end_run(client, run_id, status, error)


if __name__ == "__main__":
    sigterm_raises_interrupt_for_good()
    raise SystemExit(_child_main(sys.argv[1], sys.argv[2]))
