"""Ctrl-C and SIGTERM: the one place the workbench sets signal handlers.

Every handler is set through :class:`SignalHandlers`: within a ``with`` block, on the main
thread only (Python allows handlers nowhere else; elsewhere the signals are left alone), and
the previous handlers are given back on exit. What a signal does is one of a few choices:

- :class:`StopRequests`: Ctrl-C and SIGTERM set a flag a loop checks, for the stretches where
  an exception could leave a run without its recorder (a study between creating a child's
  run and starting its process).
- :class:`SigtermRaisesInterrupt`: SIGTERM raises KeyboardInterrupt as Ctrl-C does, so a
  sweep or a search ends its current child and its parent KILLED wherever it is.
- :class:`TrainingInterrupt`: SIGTERM marks the run interrupted (the training loop checks the
  mark) and raises KeyboardInterrupt, turned into a clean KILLED ending.
- :func:`sigterm_raises_interrupt_for_good`: a process the workbench started for one job (a
  launched run, a search worker) treats SIGTERM as Ctrl-C until it exits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Handler = Callable[[int, Any], Any] | int | signal.Handlers | None


def raise_interrupt(signum: int, frame: Any) -> None:
    """A handler that raises KeyboardInterrupt, as Ctrl-C does."""
    raise KeyboardInterrupt


class SignalHandlers:
    """``handlers`` (signal -> handler) within the block, on the main thread; on exit the
    previous handlers of those signals, and of the signals in ``restore`` (which something
    inside the block may change: Lightning ignores SIGINT after an interrupt), come back."""

    def __init__(self, handlers: Mapping[int, Handler], *, restore: Iterable[int] = ()):
        self.handlers = dict(handlers)
        self.restore = tuple(restore)
        self.previous: dict[int, Handler] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (*self.handlers, *self.restore):
                self.previous.setdefault(sig, signal.getsignal(sig))
            for sig, handler in self.handlers.items():
                signal.signal(sig, handler)
        return self

    def switch(self, handler: Handler) -> None:
        """Within the block, ``handler`` for the same signals from now on (the previous
        handlers still come back on exit)."""
        for sig in self.handlers:
            if sig in self.previous:
                signal.signal(sig, handler)

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False


class StopRequests(SignalHandlers):
    """Ctrl-C and SIGTERM set a flag the background loop checks, instead of raising wherever
    the main thread is (e.g. between creating a child's run and starting its process)."""

    def __init__(self):
        self.event = threading.Event()
        super().__init__({signal.SIGINT: self._request, signal.SIGTERM: self._request})

    def _request(self, signum: int, frame: Any) -> None:
        self.event.set()

    def __enter__(self) -> threading.Event:
        super().__enter__()
        return self.event


class SigtermRaisesInterrupt(SignalHandlers):
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so a sweep or a search ends its
    current in-process child and its parent KILLED wherever it is, also between two children."""

    def __init__(self):
        super().__init__({signal.SIGTERM: raise_interrupt})


class TrainingInterrupt(SignalHandlers):
    """SIGTERM -> ``flag`` set (the training loop checks it) and KeyboardInterrupt raised,
    turned into a clean KILLED ending. SIGINT's handler is given back too: Lightning ignores
    SIGINT after an interrupt."""

    def __init__(self):
        self.flag = False
        super().__init__({signal.SIGTERM: self._interrupt}, restore=(signal.SIGINT,))

    def _interrupt(self, signum: int, frame: Any) -> None:
        self.flag = True
        raise KeyboardInterrupt


def sigterm_raises_interrupt_for_good() -> None:
    """For the rest of this process, SIGTERM raises KeyboardInterrupt as Ctrl-C does: the
    entry point of a process started for one job, whose stop is a SIGTERM."""
    signal.signal(signal.SIGTERM, raise_interrupt)
