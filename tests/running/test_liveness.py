"""A run is declared dead only when its process is gone for certain, a verdict a live process
outlives is taken back, and runs started together on an empty cache build the base once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_TINY, fast_spec, wait_until
from workbench import tracking
from workbench.running import liveness
from workbench.running.launcher import attach, launch
from workbench.spec import mlflow_names

# Each launched run below trains the fast tiny base; on 2 idle cores it starts in about 10 s
# and trains 1,000 steps in about 10 s. Deadlines allow a machine loaded several times over.
RUN_DEADLINE_S = 600
LONG_RUN = {"steps": 1000, "eval_every": 500, "log_every": 10}


def _flip_boot_time(monkeypatch, seconds: float = 1.0) -> None:
    """What the kernel's boot time does when the clock is adjusted: /proc/stat's whole-second
    btime moves, and every wall-clock process start time psutil computes moves with it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the boot time flip is a Linux behaviour")
    from psutil import _pslinux

    real = _pslinux.boot_time
    monkeypatch.setattr(_pslinux, "boot_time", lambda: real() + seconds)


def test_a_live_process_stays_alive_when_the_boot_time_flips(monkeypatch):
    mark = liveness.process_start(os.getpid())
    wall = psutil.Process(os.getpid()).create_time()
    _flip_boot_time(monkeypatch, 1.0)
    assert liveness.process_alive(os.getpid(), mark)
    # A mark written by an earlier version (wall-clock seconds) survives the flip too.
    assert liveness.process_alive(os.getpid(), repr(wall))


def test_gone_zombie_and_recycled_processes_are_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    mark = liveness.process_start(child.pid)
    wait_until(
        lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE,
        60,
        "the child exits (a zombie until it is waited for)",
    )
    assert not liveness.process_alive(child.pid, mark)  # exited: a zombie is gone
    child.wait()
    assert not liveness.process_alive(child.pid, mark)  # no such process
    # The same pid with another start is another process (a recycled pid).
    other = liveness.process_start(os.getpid())
    assert liveness.process_alive(os.getpid(), other)
    if other.startswith(liveness.TICKS_PREFIX):
        boot, ticks = other[len(liveness.TICKS_PREFIX) :].rsplit(":", 1)
        assert not liveness.process_alive(
            os.getpid(), f"{liveness.TICKS_PREFIX}{boot}:{int(ticks) - 500}"
        )
    assert not liveness.process_alive(os.getpid(), repr(time.time() - 3600))


def _steps_logged(client, run_id) -> int:
    history = client.get_metric_history(run_id, "train/loss")
    return max((m.step for m in history), default=0)


def test_a_slow_probe_and_a_flipped_boot_time_leave_a_training_run_finished(store_uri, monkeypatch):
    """The watcher of the workshop room: an attached handle polled while the run trains, its
    probe slowed (a loaded machine) and the boot time moved by a second; the run ends FINISHED
    with no error tag."""
    handle = launch(fast_spec(train=LONG_RUN))
    client = tracking.connect(store_uri)
    try:
        watcher = attach(handle.run_id)  # no process handle: it judges by pid and start mark
        real_status = psutil.Process.status

        def slow_status(self):
            time.sleep(0.3)
            return real_status(self)

        monkeypatch.setattr(psutil.Process, "status", slow_status)
        _flip_boot_time(monkeypatch, 1.0)
        seen = set()

        def ended():
            seen.add(watcher.status())
            liveness.reap_dead_runs(client)
            return not handle.alive() and watcher.status() in ("FINISHED", "FAILED", "KILLED")

        wait_until(ended, RUN_DEADLINE_S, "the launched run ends", poll_s=0.2)
    finally:
        if handle.alive():
            handle.stop()
    run = client.get_run(handle.run_id)
    log = Path(handle.log_path).read_text()
    assert run.info.status == "FINISHED", log[-3000:]
    assert "FAILED" not in seen, seen
    assert mlflow_names.TAG_ERROR not in run.data.tags, run.data.tags.get(mlflow_names.TAG_ERROR)
    assert _steps_logged(client, handle.run_id) == 1000


def test_a_false_verdict_is_taken_back_by_the_live_run(store_uri):
    handle = launch(fast_spec(train=LONG_RUN))
    client = tracking.connect(store_uri)
    try:
        wait_until(
            lambda: _steps_logged(client, handle.run_id) >= 20, RUN_DEADLINE_S, "the run trains"
        )
        assert client.get_run(handle.run_id).info.status == "RUNNING"
        # A watcher that could not see the process declares it dead while it trains.
        tracking.declare_dead(client, handle.run_id, "the run died: its process seemed gone")
        assert client.get_run(handle.run_id).info.status == "FAILED"
        wait_until(
            lambda: client.get_run(handle.run_id).info.status != "FAILED" or not handle.alive(),
            60,
            "the live run reopens itself (its recorder's next heartbeat)",
        )
        reopened = client.get_run(handle.run_id)
        assert reopened.info.status in ("RUNNING", "FINISHED")
        assert handle.wait(timeout=RUN_DEADLINE_S) == "FINISHED", Path(handle.log_path).read_text()[
            -3000:
        ]
    finally:
        if handle.alive():
            handle.stop()
    run = client.get_run(handle.run_id)
    assert run.info.status == "FINISHED"
    assert mlflow_names.TAG_ERROR not in run.data.tags
    assert mlflow_names.DECLARED_DEAD_TAG not in run.data.tags
    assert "withdrawn: the process was alive" in run.data.tags[mlflow_names.TAG_WITHDRAWN_VERDICT]
    assert _steps_logged(client, handle.run_id) == 1000


def test_two_runs_on_an_empty_cache_build_the_base_once(store_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "empty-cache"))
    # The fast base with more pretraining steps: a build of about 20 s alone, so the second
    # run reaches the lock while the first still builds.
    spec = fast_spec(
        model={"name": "tiny", "tiny": {**FAST_TINY, "pretrain_steps": 200}},
        train={"steps": 4, "eval_every": 4},
    )
    handles = [launch(spec), launch(spec)]
    client = tracking.connect(store_uri)
    try:
        for handle in handles:
            assert handle.wait(timeout=RUN_DEADLINE_S) == "FINISHED", Path(
                handle.log_path
            ).read_text()[-3000:]
    finally:
        for handle in handles:
            if handle.alive():
                handle.stop()
    logs = [Path(h.log_path).read_text() for h in handles]

    # The waiting run echoes the build's lines as "(the other build) ..."; its own lines
    # start the line.
    def says(log: str, start: str) -> bool:
        return any(line.startswith(start) for line in log.splitlines())

    builders = [log for log in logs if says(log, "Building the tiny base model")]
    waiters = [
        log
        for log in logs
        if says(log, "Waiting for another process that is building the tiny base")
    ]
    assert len(builders) == 1, [log[-2000:] for log in logs]
    assert len(waiters) == 1, [log[-2000:] for log in logs]
    assert builders[0] is not waiters[0]
    assert "pretraining step 200/200" in builders[0]
    assert "the other build ended after" in waiters[0]
    # Each run said what it was doing before it trained.
    phases = [client.get_run(h.run_id).data.tags.get(mlflow_names.PHASE_TAG, "") for h in handles]
    assert all(phases), phases
    built = list((tmp_path / "empty-cache" / "tiny").iterdir())
    assert len([p for p in built if p.is_dir() and not p.name.startswith(".")]) == 1, built
