"""Ctrl-C and SIGTERM for the studies (sweeps, searches) that run children under a parent run.

Both end a study's children and its parent KILLED: :class:`SigtermRaisesInterrupt` makes
SIGTERM raise KeyboardInterrupt as Ctrl-C does, and :class:`StopRequests` turns both into a
flag for the stretches where an exception could leave a run without its recorder. Signal
handlers can only be set in the main thread; elsewhere both leave the signals alone.
"""

from __future__ import annotations

import signal
import threading


class StopRequests:
    """Ctrl-C and SIGTERM set a flag the background loop checks, instead of raising wherever
    the main thread is (e.g. between creating a child's run and starting its process)."""

    def __enter__(self) -> threading.Event:
        self.event = threading.Event()
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class SigtermRaisesInterrupt:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so a sweep or a search ends its
    current in-process child and its parent KILLED wherever it is, also between two children."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():

            def on_term(*_):
                raise KeyboardInterrupt

            self.previous = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc) -> bool:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
