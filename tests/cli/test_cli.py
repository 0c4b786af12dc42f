"""CLI commands that the end-to-end tests do not already cover: help texts and `workbench ui`."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from tests.conftest import interruptible, run_cli
from workbench import tracking
from workbench.cli.main import build_parser
from workbench.spec.run_spec import RunSpec

# Every command the parser knows, so a new one is covered without editing this list.
COMMANDS = tuple(
    next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
)


def test_the_main_commands_are_all_there():
    assert {
        "demo",
        "run",
        "launch",
        "resume",
        "status",
        "stop",
        "front",
        "ui",
        "export",
        "runs",
        "sweep",
        "lab",
        "merge",
        "search",
    } <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"workbench {command}" in out and len(out.splitlines()) >= 3


@pytest.mark.parametrize("command", [["demo"], ["run", "spec.yaml"], ["resume", "abc"]])
def test_progress_bars_show_on_a_terminal_only(command, monkeypatch):
    from workbench.cli.common import show_progress

    class Stdout(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    args = build_parser().parse_args(command)
    for tty in (True, False):
        monkeypatch.setattr(sys, "stdout", Stdout(tty))
        assert show_progress(args) is tty  # redirected output gets no bar redraws
    args = build_parser().parse_args([*command, "--no-progress"])
    monkeypatch.setattr(sys, "stdout", Stdout(True))
    assert show_progress(args) is False


def test_front_of_a_missing_experiment_is_a_clear_error(store_uri):
    result = run_cli("front", "--experiment", "nope")
    assert (
        result.returncode == 2
        and "no experiment 'nope'" in result.stderr
        and "Traceback" not in result.stderr
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _alive(pids: set[int]) -> set[int]:
    """The pids among these that still run (zombies awaiting their reaper count as gone)."""
    return {
        p for p in pids if psutil.pid_exists(p) and _status(p) not in (None, psutil.STATUS_ZOMBIE)
    }


def _status(pid: int) -> str | None:
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return None


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_ui_serves_the_store_and_stops_with_its_whole_process_tree(store_uri, stop):
    """SIGTERM to `workbench ui`, or Ctrl-C (SIGINT to its terminal's process group), ends
    the MLflow server and its uvicorn worker: nothing listens on the port, no process of
    theirs remains, and the user sees one line, no traceback."""
    client = tracking.connect()
    tracking.ensure_experiment(client, "visible-in-ui")
    run_id = tracking.start_run(
        client, RunSpec.parse({"tracking": {"experiment": "visible-in-ui"}})
    )
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ),
        preexec_fn=interruptible,
    )
    tree: set[int] = set()
    try:
        # Start-up: about 6 s on 2 idle cores, 30 s seen beside other work.
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"workbench ui exited: {server.communicate()}"
            assert time.monotonic() < deadline, "the MLflow server did not answer in 150 s"
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["run"]["info"]["run_id"] == run_id
        tree = {c.pid for c in psutil.Process(server.pid).children(recursive=True)}
        assert len(tree) >= 2, "expected mlflow server and its uvicorn worker"

        if stop == "SIGTERM":
            busy = run_cli("ui", "--port", str(port), timeout=120)
            assert busy.returncode != 0
            assert (
                f"port {port}" in busy.stderr
                and "already in use" in busy.stderr
                and "--port" in busy.stderr
            )
            assert "Traceback" not in busy.stderr
            os.kill(server.pid, signal.SIGTERM)
        else:
            os.killpg(server.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0, err
        deadline = time.monotonic() + 30
        while (_listening(port) or _alive(tree)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _listening(port), f"something still listens on port {port}"
        assert not _alive(tree), f"processes of the server remain: {_alive(tree)}"
        assert "Traceback" not in err and "Warning" not in err, err
        assert out.splitlines()[-1] == "MLflow UI stopped", out
    finally:
        if server.poll() is None:
            server.kill()
        for pid in _alive(tree):  # a failed test leaves nothing behind
            os.kill(pid, signal.SIGKILL)
        server.communicate(timeout=30)
