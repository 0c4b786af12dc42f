"""Servers the workbench starts (the MLflow UI, JupyterLab, a shared board): started
on a free port, ready when they answer HTTP, and stopped with their whole process group.

A server such as `mlflow server` is a tree of processes (the CLI, then uvicorn and its
workers). :class:`ManagedServer` starts it in a session of its own, so the tree is one
process group that a terminal's Ctrl-C does not reach: the workbench alone handles the
signal and ends the group, SIGTERM first and SIGKILL after a grace period, on SIGTERM,
SIGINT, SIGHUP, a normal exit and at interpreter exit. The server's own output goes to a log
file (its start-up chatter, deprecation warnings and shutdown tracebacks stay off the
screen); the log's last lines are shown when the server fails to start.

Stdlib only (and the workbench's error type and paths): the CLI, the launcher and widgets can
all use it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from workbench.running.signals import SignalHandlers
from workbench.spec.errors import WorkbenchError

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
    answers; any HTTP answer below 500 counts as ready. A server that speaks no HTTP (a
    database) gives ``ready_check`` instead: called until it returns True (it may raise a
    WorkbenchError to give up at once). ``stop_command``, when given, is how the server asks
    to be stopped (e.g. ``pg_ctl stop -m fast``): it runs first, then the group is ended as
    usual. ``port_option`` names the option that sets the port, for the busy-port message.
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
        ready_check: Callable[[], bool] | None = None,
        stop_command: Sequence[str] | None = None,
        port_option: str = "--port",
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
        self._ready_check = ready_check or self._answers
        self._stop_command = list(stop_command) if stop_command else None
        self._port_option = port_option
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def connect_host(self) -> str:
        # A server bound to every interface is reached through this machine's loopback.
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)

    @property
    def url(self) -> str:
        host = self.connect_host
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
                f"port {self.port} on {self.host} is already in use "
                "(another server is listening there); "
                f"choose another with {self._port_option} N, "
                f"or {self._port_option} 0 for any free port"
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
        while not self._ready_check():
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
        if self._stop_command and process.poll() is None:
            # The server's own way to stop cleanly; whatever it leaves is ended below.
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    self._stop_command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=self._env,
                    timeout=self.grace * 3,
                )
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


def mlflow_server(
    name: str,
    backend_uri: str,
    *,
    host: str,
    port: int,
    options: Sequence[str] = (),
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    **kwargs,
) -> ManagedServer:
    """``mlflow server`` over ``backend_uri`` as a ManagedServer (not started): ``workers``
    uvicorn workers and no job processes, so it is ready in seconds on a small machine (its
    defaults start 11 processes); Starlette's deprecation warning, printed at every start, is
    silenced. ``options`` are more ``mlflow server`` options; ``kwargs`` go to ManagedServer."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--backend-store-uri",
        backend_uri,
        "--workers",
        str(workers),
        *options,
    ]
    base = dict(os.environ if env is None else env)
    warnings = ",".join(
        filter(None, [base.get("PYTHONWARNINGS"), "ignore:starlette.middleware.wsgi is deprecated"])
    )
    base.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PYTHONWARNINGS=warnings)
    return ManagedServer(
        name, command, host=host, port=port, health_path="/health", env=base, **kwargs
    )


# JupyterLab plugins `workbench lab` turns off. The announcements plugin asks "Would you like to
# get notified about official Jupyter news?" in a pop-up that covers the cells, even with
# news_url=None (which only stops the fetching).
LAB_DISABLED_PLUGINS = ("@jupyterlab/apputils-extension:announcements",)


def lab_config_dir(folder: str | os.PathLike | None = None) -> Path:
    """A Jupyter config folder of the workbench's own (default: ``jupyter-config`` under the
    workbench's cache) whose ``labconfig/page_config.json`` disables
    :data:`LAB_DISABLED_PLUGINS`. Added to ``JUPYTER_CONFIG_PATH``, it changes nothing in the
    user's own Jupyter settings, which JupyterLab merges with it."""
    if folder is None:
        from workbench.spec import paths

        folder = paths.cache_dir() / "jupyter-config"
    folder = Path(folder)
    labconfig = folder / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"disabledExtensions": dict.fromkeys(LAB_DISABLED_PLUGINS, True)}, indent=1)
    target = labconfig / "page_config.json"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        partial = target.with_name(f"page_config.{os.getpid()}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)  # a lab starting beside this one never reads half a file
    return folder


def jupyterlab_server(
    root: str | os.PathLike,
    *,
    token: str,
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    config_dir: str | os.PathLike | None = None,
    **kwargs,
) -> ManagedServer:
    """JupyterLab on the notebooks in ``root`` as a ManagedServer (not started): behind
    ``token``, one port (no retries), no news feed, and the plugins of
    :data:`LAB_DISABLED_PLUGINS` off (:func:`lab_config_dir`, put first on
    ``JUPYTER_CONFIG_PATH``); ``--allow-root`` where it runs as root (containers), which
    JupyterLab refuses otherwise. ``kwargs`` go to ManagedServer."""
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip={host}",
        "--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    base = dict(os.environ if env is None else env)
    config_path = [str(lab_config_dir(config_dir)), base.get("JUPYTER_CONFIG_PATH", "")]
    base["JUPYTER_CONFIG_PATH"] = os.pathsep.join(p for p in config_path if p)
    return ManagedServer(
        "JupyterLab", command, host=host, port=port, health_path="/api", env=base, **kwargs
    )


class Stopped(Exception):
    """Raised in the main thread by SIGTERM or SIGHUP while a server runs in the foreground."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _first_exit(servers: Sequence[ManagedServer]) -> tuple[ManagedServer, int]:
    """Block until one of the servers exits; that server and its exit code."""
    while True:
        for server in servers:
            process = server.process
            if process is None:
                return server, 0
            try:
                return server, process.wait(timeout=0.5 / len(servers))
            except subprocess.TimeoutExpired:
                continue


def serve_in_foreground(
    server: ManagedServer, on_ready=None, *, behind: Sequence[ManagedServer] = (), prepare=None
) -> int:
    """Start the server, call ``on_ready(server)`` once it answers, and keep it until it exits
    or until SIGINT (Ctrl-C), SIGTERM or SIGHUP reach this process; then end its process group.
    Returns the server's exit code, or 0 when it was stopped on purpose (the caller says so).

    ``behind`` are servers it needs (a database): started first, in order, ``prepare()``
    called once they answer, stopped last, in reverse order; one of them exiting ends all."""

    def raise_stopped(signum, frame):
        raise Stopped(signum)

    # Set before start(): a SIGTERM during start-up must end the group too. SIGINT too,
    # explicitly: a process started in the background by a shell inherits SIGINT ignored, and
    # Ctrl-C (or kill -INT) must still stop the server.
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with SignalHandlers(dict.fromkeys(stopping, raise_stopped)) as handlers:
        try:
            for needed in behind:
                needed.start()
            if prepare is not None:
                prepare()
            server.start()
            if on_ready is not None:
                on_ready(server)
            exited, code = _first_exit([server, *behind])
            if code or exited is not server:
                print(
                    f"{exited.name} exited with code {code}; its log ({exited.log_path}) ends "
                    f"with:\n{_tail(exited.log_path)}",
                    file=sys.stderr,
                )
            return code or int(exited is not server)  # a needed server gone is a failure
        except (KeyboardInterrupt, Stopped):
            return 0
        finally:
            handlers.switch(signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
            for running in (server, *reversed(behind)):
                running.stop()
