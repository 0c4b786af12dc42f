"""ManagedServer on a small stdlib HTTP server whose process starts a child of its own, the way
`mlflow server` starts uvicorn: port checks, readiness, and stopping the whole tree.
(`workbench ui` over a real MLflow server: tests/test_cli.py.)"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time

import psutil
import pytest

from workbench.serving.servers import ManagedServer, free_port, port_is_free
from workbench.spec.errors import WorkbenchError

# Serves HTTP on argv[1] after starting a child that would outlive it; with "stubborn" both
# ignore SIGTERM (only SIGKILL ends them).
SERVER = textwrap.dedent("""
    import http.server, signal, subprocess, sys
    if "stubborn" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        preexec = lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        preexec = None
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=preexec)
    print("a library's DeprecationWarning", file=sys.stderr, flush=True)
    handler = http.server.SimpleHTTPRequestHandler
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
""")


def _server(tmp_path, *extra: str, **kwargs) -> ManagedServer:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    kwargs.setdefault("port", 0)
    return ManagedServer(
        "test server",
        [sys.executable, str(script), "{port}", *extra],
        cwd=tmp_path,
        log_path=tmp_path / "server.log",
        startup_timeout=60,
        **kwargs,
    )


def _tree(pid: int) -> set[int]:
    return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}


def _running(pids: set[int]) -> set[int]:
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def _until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_port_0_serves_on_a_free_port_and_stop_ends_the_whole_tree(tmp_path):
    server = _server(tmp_path).start()
    try:
        assert server.port != 0 and not port_is_free("127.0.0.1", server.port)
        tree = _tree(server.process.pid)
        assert len(tree) == 2  # the server and its child
    finally:
        server.stop()
    assert _until(lambda: not _running(tree)), f"left running: {_running(tree)}"
    assert port_is_free("127.0.0.1", server.port)
    # Its output went to the log, not to the terminal.
    assert "DeprecationWarning" in (tmp_path / "server.log").read_text()


def test_a_busy_port_is_an_error_naming_it_and_starts_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _server(tmp_path, port=port)
        with pytest.raises(
            WorkbenchError, match=f"port {port} on 127.0.0.1 is already in use.*--port"
        ):
            server.start()
        assert server.process is None


def test_what_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    server = _server(tmp_path, "stubborn", grace=1.0).start()
    tree = _tree(server.process.pid)
    started = time.monotonic()
    server.stop()
    assert _until(lambda: not _running(tree)), f"left running: {_running(tree)}"
    assert time.monotonic() - started < 10


def test_a_server_that_exits_before_answering_shows_its_log(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", "import sys; print('cannot open the store'); sys.exit(3)"]
    server = ManagedServer("broken", command, port=port, log_path=tmp_path / "broken.log")
    with pytest.raises(
        WorkbenchError, match=r"(?s)broken exited \(code 3\).*cannot open the store"
    ):
        server.start()
    assert server.process is None


def test_no_answer_before_the_deadline_stops_the_server(tmp_path):
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    server = ManagedServer(
        "silent", command, port=free_port(), log_path=tmp_path / "silent.log", startup_timeout=1.0
    )
    with pytest.raises(WorkbenchError, match="did not answer"):
        server.start()
    assert server.process is None and os.path.exists(tmp_path / "silent.log")
