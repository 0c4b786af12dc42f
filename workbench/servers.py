"""Servers the workbench starts (the MLflow UI; later JupyterLab and a shared board): started
on a free port, ready when they answer HTTP, and stopped with their whole process group.

A server such as `mlflow server` is a tree of processes (the CLI, then uvicorn and its
workers). :class:`ManagedServer` starts it in a session of its own, so the tree is one
process group that a terminal's Ctrl-C does not reach: the workbench alone handles the
signal and ends the group, SIGTERM first and SIGKILL after a grace period, on SIGTERM,
SIGINT, SIGHUP, a normal exit and at interpreter exit. The server's own output goes to a log
file (its start-up chatter, deprecation warnings and shutdown tracebacks stay off the
screen); the log's last lines are shown when the server fails to start.

Stdlib only (and the workbench's error type): the CLI, the launcher and widgets can all use it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from workbench.errors import WorkbenchError

STARTUP_TIMEOUT_S = 120.0  # mlflow server: ~6 s on 2 idle cores, 12-22 s beside other work
GRACE_S = 10.0  # between SIGTERM and SIGKILL


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on (host, port) now. SO_REUSEADDR as servers set it, so
    a port left in TIME_WAIT by a stopped server counts as free, a listening one as busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system's choice)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies waiting to be reaped by
    whoever adopted them count as gone)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedServer:
    """One server process tree: ``start()`` it, ``stop()`` it (or use it as a context manager).

    ``command`` may hold ``{host}`` and ``{port}``; they are replaced by the bound host and the
    port (``port=0`` picks a free one). ``health_path`` is requested on the server until it
    answers; any HTTP answer below 500 counts as ready.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        health_path: str = "/",
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        grace: float = GRACE_S,
    ):
        self.name = name
        self.host = host
        self.port = port
        self.health_path = health_path
        self._command = list(command)
        self._env = dict(os.environ if env is None else env)
        self._cwd = cwd
        self._log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        # A server bound to every interface is reached through this machine's loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(
                prefix=f"workbench-{self.name.lower().replace(' ', '-')}-", suffix=".log"
            )
            os.close(fd)
            self._log_path = Path(name)
        return self._log_path

    def check_port(self) -> int:
        """The port to serve on: a free one for port 0; a busy port is a WorkbenchError."""
        if self.port == 0:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            raise WorkbenchError(
                f"port {self.port} on {self.host} is already in use (another server is listening there); "
                f"choose another with --port N, or --port 0 for any free port"
            )
        return self.port

    def start(self) -> ManagedServer:
        """Start the server and return once it answers HTTP; a busy port, an early exit or no
        answer before the deadline raise a WorkbenchError (and leave no process behind)."""
        self.check_port()
        command = [
            part.replace("{host}", self.host).replace("{port}", str(self.port))
            for part in self._command
        ]
        with open(self.log_path, "ab") as log:
            # A session of its own: one process group to end, out of reach of the terminal's Ctrl-C.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=2) as response:
                return response.status < 500
        except urllib.error.HTTPError as err:
            return err.code < 500
        except (OSError, ValueError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not self._answers():
            try:
                code = self.process.wait(timeout=0.25)  # polls the child's exit and paces the loop
            except subprocess.TimeoutExpired:
                pass
            else:
                raise WorkbenchError(
                    f"{self.name} exited (code {code}) before it answered on {self.url}; "
                    f"its log ({self.log_path}) ends with:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise WorkbenchError(
                    f"{self.name} did not answer on {self.url}{self.health_path} within "
                    f"{self.startup_timeout:g} s; its log ({self.log_path}) ends with:\n"
                    f"{_tail(self.log_path)}"
                )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """End the whole process group: SIGTERM, then SIGKILL to what is left after the grace
        period. Safe to call more than once and from several places (signal handler, atexit)."""
        with self._lock:
            process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        pgid = process.pid  # the session leader: its pid is the group's id
        self._signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)
            if process.poll() is not None and not _group_alive(pgid):
                return
        self._signal_group(pgid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + self.grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the adopting init reaps them; nothing else to wait on

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def wait(self) -> int:
        """Block until the server exits on its own; its exit code."""
        return self.process.wait() if self.process is not None else 0

    def __enter__(self) -> ManagedServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class Stopped(Exception):
    """Raised in the main thread by SIGTERM or SIGHUP while a server runs in the foreground."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def serve_in_foreground(server: ManagedServer, on_ready=None) -> int:
    """Start the server, call ``on_ready(server)`` once it answers, and keep it until it exits
    or until SIGINT (Ctrl-C), SIGTERM or SIGHUP reach this process; then end its process group.
    Returns the server's exit code, or 0 when it was stopped on purpose (the caller says so)."""

    def raise_stopped(signum, frame):
        raise Stopped(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if main_thread:  # before start(): a SIGTERM during start-up must end the group too
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, raise_stopped)
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        code = server.wait()
        if code:
            print(
                f"{server.name} exited with code {code}; its log ({server.log_path}) ends with:\n"
                f"{_tail(server.log_path)}",
                file=sys.stderr,
            )
        return code
    except (KeyboardInterrupt, Stopped):
        return 0
    finally:
        if main_thread:  # a second Ctrl-C or SIGTERM must not cut the group's stop short
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous.setdefault(sig, signal.getsignal(sig))
                signal.signal(sig, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
