"""The run commands as users type them, each in a fresh interpreter: `workbench run --steps`,
`workbench launch`, `workbench status` while it trains, `workbench stop`, `status` after."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, run_cli, wait_until
from workbench import tracking

pytestmark = pytest.mark.slow


def test_run_with_steps_overrides_the_specs_steps(store_uri, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(train={"steps": 50, "eval_every": 100})))
    result = run_cli(
        "run", str(spec_file), "--steps", "3", "--no-progress", cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_id = re.search(r"^run (\w+) FINISHED", result.stdout, re.M)[1]
    client = MlflowClient(store_uri)
    assert [s for s, _ in tracking.metric_history(client, run_id, "train/loss")] == [1, 2, 3]
    assert client.get_run(run_id).data.params["train.steps"] == "3"  # what ran is what is stored
    assert f"workbench export {run_id} DIR" in result.stdout


def test_run_redirected_to_a_file_prints_each_logged_step_as_it_trains(store_uri, tmp_path):
    """`workbench run spec > file`: a line per logged step, in the file while the run still
    trains (flushed as they are written), then the run's summary."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(fast_spec(train={"steps": 400, "eval_every": 1000, "log_every": 2}))
    )
    out_file = tmp_path / "out.txt"
    with out_file.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "run", str(spec_file)],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
    try:

        def second_logged_step_or_exit():
            return "\nstep 4/400  loss " in out_file.read_text() or process.poll() is not None

        # Start-up and 4 steps: about 10 s on 2 idle cores; 300 s for a loaded machine. 400
        # steps take seconds more, so the lines are seen while the run still trains.
        wait_until(
            second_logged_step_or_exit, 300, "a step line in the redirected output", poll_s=0.1
        )
        assert process.poll() is None, "the run ended before its step lines were in the file"
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    lines = out_file.read_text().splitlines()
    run_id = re.search(r"^run (\w+): training 400 steps$", out_file.read_text(), re.M)[1]
    steps = [
        int(m[1])
        for line in lines
        if (m := re.match(r"step (\d+)/400  loss [\d.]+  [\d.e-]+ s/step", line))
    ]
    assert steps == [1, *range(2, 401, 2)]
    assert (
        "run ended FINISHED" in lines
        and f"run {run_id} FINISHED: experiment 'tests' in {store_uri}" in lines
    )
    assert "\r" not in out_file.read_text() and "Epoch 0" not in out_file.read_text()


def test_launch_status_stop_from_the_command_line(store_uri, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(train={"steps": 100_000, "eval_every": 100_000})))
    launched = run_cli("launch", str(spec_file), cwd=tmp_path, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    found = re.search(r"launched run (\w+) \(pid (\d+)\); log: (\S+)", launched.stdout)
    assert found, launched.stdout
    run_id, pid, log = found[1], int(found[2]), found[3]
    assert (
        f"workbench status {run_id}" in launched.stdout
        and f"workbench stop {run_id}" in launched.stdout
    )
    client = MlflowClient(store_uri)
    try:

        def trained_two_steps():
            assert client.get_run(run_id).info.status == "RUNNING", Path(log).read_text()[-3000:]
            return len(tracking.metric_history(client, run_id, "train/loss")) >= 2

        # Start-up and 2 logged steps: about 10 s on 2 idle cores; 300 s for a loaded machine.
        wait_until(trained_two_steps, 300, "the launched run logged 2 training losses", poll_s=0.5)
        status = run_cli("status", run_id, timeout=300)
        assert status.returncode == 0, status.stderr[-2000:]
        assert f"run {run_id} (" in status.stdout and ": RUNNING" in status.stdout
        step = re.search(r"step (\d+)/100000, last loss \d", status.stdout)
        assert step and int(step[1]) >= 2, status.stdout
        assert "ETA" in status.stdout

        stopped = run_cli("stop", run_id, timeout=300)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        assert stopped.stdout.strip().splitlines()[-1] == "KILLED"
    finally:
        if client.get_run(run_id).info.status == "RUNNING":
            os.killpg(pid, 9)
    status = run_cli("status", run_id, timeout=300)
    assert ": KILLED" in status.stdout and "ETA" not in status.stdout, status.stdout

    def group_gone():
        # Not this test's child: once it exits, whichever process adopted it reaps it, so a
        # zombie may linger for a moment; it no longer runs.
        return not [
            p
            for p in psutil.process_iter(["pid", "status"])
            if _pgid(p.info["pid"]) == pid and p.info["status"] != psutil.STATUS_ZOMBIE
        ]

    wait_until(group_gone, 60, "the stopped run's process group has no live process")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
