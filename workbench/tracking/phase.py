"""A launched run's signs of life before it trains: the heartbeat and what it is doing.

A launched run exists in the store from the moment it is launched, but its recorder (and so
its heartbeat) starts only once the base model is loaded. Building the tiny base on a cold
cache, or waiting for another process's build, can take minutes on loaded cores; without a
sign of life a watcher on another host would take the run for a hang. :class:`PhaseBeat`
refreshes the heartbeat from a thread and keeps the latest progress line in the run's
``workbench.phase`` tag, where the monitor and ``workbench status`` show it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from workbench.spec.mlflow_names import HEARTBEAT_TAG, PHASE_TAG
from workbench.tracking.conventions import truncate
from workbench.tracking.store import withdraw_dead_verdict


class PhaseBeat:
    """Use as ``with PhaseBeat(client, run_id, log) as say: load(log=say)``: every line said
    goes to ``log`` and, as the run's phase, to the store; the heartbeat is refreshed every
    ``every_s`` seconds until the block ends. With no ``run_id`` it only passes lines on."""

    def __init__(
        self,
        client: MlflowClient | None,
        run_id: str | None,
        log: Callable[[str], object],
        every_s: float = 5.0,
    ):
        self.client, self.run_id, self.log, self.every_s = client, run_id, log, float(every_s)
        self._line: str | None = None
        self._sent: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def tracks(self) -> bool:
        return self.client is not None and self.run_id is not None

    def __call__(self, line: str) -> None:
        self.log(line)
        with self._lock:
            self._line = line.strip()

    def __enter__(self) -> PhaseBeat:
        if self.tracks:
            self._thread = threading.Thread(target=self._loop, name="workbench-phase", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=max(5.0, 2 * self.every_s))
            self.beat()  # the last line said, however short the block was
        return False

    def _loop(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self.every_s):
                return

    def beat(self) -> None:
        """Send the heartbeat (and the phase, if it changed); take back a verdict that said
        this live process was dead. A store that cannot be reached is tried at the next beat."""
        with self._lock:
            line = self._line
        tags = {HEARTBEAT_TAG: f"{time.time():.3f}"}
        if line is not None and line != self._sent:
            tags[PHASE_TAG] = truncate(line, MAX_TAG_VAL_LENGTH)
        try:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            self._sent = line
            withdraw_dead_verdict(self.client, self.run_id, reopen=True)
        except Exception:  # noqa: BLE001 - a store outage must not stop the build
            pass
