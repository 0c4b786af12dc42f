"""CLI commands that the end-to-end tests do not already cover: help texts and `workbench ui`."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import run_cli
from workbench import tracking
from workbench.cli import build_parser
from workbench.spec import RunSpec

COMMANDS = ("demo", "run", "launch", "resume", "status", "stop", "front", "ui", "export")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"workbench {command}" in out and len(out.splitlines()) >= 3


@pytest.mark.parametrize("command", [["demo"], ["run", "spec.yaml"], ["resume", "abc"]])
def test_progress_bars_show_on_a_terminal_only(command, monkeypatch):
    from workbench import cli

    class Stdout(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    args = build_parser().parse_args(command)
    for tty in (True, False):
        monkeypatch.setattr(sys, "stdout", Stdout(tty))
        assert cli._show_progress(args) is tty  # redirected output gets no bar redraws
    args = build_parser().parse_args([*command, "--no-progress"])
    monkeypatch.setattr(sys, "stdout", Stdout(True))
    assert cli._show_progress(args) is False


def test_front_of_a_missing_experiment_is_a_clear_error(store_uri):
    result = run_cli("front", "--experiment", "nope")
    assert result.returncode == 2 and "no finished runs" in result.stderr and "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_localhost(store_uri):
    client = tracking.connect()
    tracking.ensure_experiment(client, "visible-in-ui")
    run_id = tracking.start_run(client, RunSpec.parse({"tracking": {"experiment": "visible-in-ui"}}))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "workbench.cli", "ui", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "the MLflow server exited"
            assert time.monotonic() < deadline, "the MLflow server did not answer in 90 s"
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["run"]["info"]["run_id"] == run_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
