"""Runs that survive faults: SIGKILL + resume, dead-run detection, invariants, concurrency."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, run_cli, wait_until
from workbench import tracking
from workbench.running import liveness
from workbench.running.pipeline import run
from workbench.spec.mlflow_names import HEARTBEAT_TAG, HOST_TAG
from workbench.spec.run_spec import RunSpec

RESUMABLE = fast_spec(train={"steps": 40, "checkpoint_every": 5, "eval_every": 20})

# `workbench run SPEC --no-progress` in a fresh interpreter, held at step $HOLD_STEP: the run's
# observer writes $HOLD_DIR/held there and waits (in the training loop, so nothing more
# trains) until $HOLD_DIR/release exists. A fault then lands at a known step of a run that
# has steps to go, however fast or slow the machine (a kill "after step k" timed from outside
# raced a fast trainer: the run could finish first).
HELD_RUN = textwrap.dedent("""
    import os
    import sys
    import threading
    from pathlib import Path

    import workbench.running.pipeline
    from workbench.cli.main import main
    from workbench.running.events import RunObserver

    class HoldAtStep(RunObserver):
        def __init__(self, step, folder):
            self.step, self.folder = step, Path(folder)

        def on_step(self, step, metrics):
            if step == self.step:
                (self.folder / "held").write_text(str(step))
                while not (self.folder / "release").exists():
                    threading.Event().wait(0.05)

    real_run = workbench.running.pipeline.run

    def held_run(spec, **kwargs):
        hold = HoldAtStep(int(os.environ["HOLD_STEP"]), os.environ["HOLD_DIR"])
        return real_run(spec, **{**kwargs, "observers": [*(kwargs.get("observers") or []), hold]})

    workbench.running.pipeline.run = held_run
    raise SystemExit(main(["run", sys.argv[1], "--no-progress"]))
""")


def _start_held_run(folder, spec: dict, step: int, env: dict | None = None) -> subprocess.Popen:
    """The run of ``spec`` in its own process session, to be held at ``step``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "held_run.py").write_text(HELD_RUN)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return subprocess.Popen(
        [sys.executable, str(folder / "held_run.py"), str(folder / "spec.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        start_new_session=True,
        env={**os.environ, **(env or {}), "HOLD_STEP": str(step), "HOLD_DIR": str(folder)},
    )


def _wait_held(proc: subprocess.Popen, folder, step: int) -> None:
    def held():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"the run exited ({proc.returncode}) before step {step}: {out[-2000:]}{err[-3000:]}"
            )
        return (folder / "held").is_file()

    # Start-up (imports, the fast base, data) and `step` steps: about 10 s on 2 idle cores.
    wait_until(held, 300, f"the run reached step {step}")
    assert (folder / "held").read_text() == str(step)


def _history(client, run_id, key="train/loss"):
    return tracking.metric_history(client, run_id, key)


def test_sigkilled_run_is_reaped_failed_then_resumes_to_the_uninterrupted_result(
    store_uri, tmp_path
):
    client = MlflowClient(store_uri)
    reference = run(RESUMABLE, log=lambda *a: None)

    kill_after = random.Random().randint(6, 30)  # a random step of 40, reported on failure
    proc = _start_held_run(tmp_path / "killed", RESUMABLE, kill_after)
    try:
        _wait_held(proc, tmp_path / "killed", kill_after)
        (held,) = client.search_runs(
            [reference_experiment(client)], filter_string="attributes.status = 'RUNNING'"
        )
        run_id = held.info.run_id
        os.killpg(proc.pid, signal.SIGKILL)  # at step kill_after of 40: the run had steps to go
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    # Within a bounded time the run is FAILED, by the reaper that every listing runs.
    def reaped():
        liveness.reap_dead_runs(client)
        return client.get_run(run_id).info.status != "RUNNING"

    wait_until(reaped, 60, f"the run killed at step {kill_after} is reaped", poll_s=0.5)
    dead = client.get_run(run_id)
    assert dead.info.status == "FAILED", kill_after
    assert "is gone" in dead.data.tags["workbench.error"]
    assert max(s for s, _ in _history(client, run_id)) <= kill_after < 40

    result = run_cli("resume", run_id, "--no-progress")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    steps = [s for s, _ in _history(client, run_id)]
    assert steps == list(range(1, 41)), f"killed after step {kill_after}: {steps}"
    # Same seed, restored optimizer/scheduler/RNG/data position: the very same numbers.
    resumed_losses = [v for _, v in _history(client, run_id)]
    assert resumed_losses == [v for _, v in _history(client, reference.run_id)], kill_after
    for name, value in reference.objectives.items():
        assert resumed.data.metrics[f"objective/{name}"] == value, (name, kill_after)
    evaluations = [s for s, _ in _history(client, run_id, "objective/correctness")]
    assert evaluations == [0, 20, 40], evaluations


def reference_experiment(client) -> str:
    return client.get_experiment_by_name(RESUMABLE["tracking"]["experiment"]).experiment_id


def test_resume_without_a_checkpoint_is_a_clear_error(store_uri):
    result = run(fast_spec(train={"steps": 3}), log=lambda *a: None)
    out = run_cli("resume", result.run_id)
    assert (
        out.returncode == 2 and "no checkpoint" in out.stderr and "checkpoint_every" in out.stderr
    )


def _fake_run(client, tags):
    run_id = tracking.start_run(client, RunSpec.parse(fast_spec()))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def test_reaper_ends_stale_and_orphaned_runs_and_spares_live_ones(store_uri):
    client = tracking.connect()
    now = time.time()
    stale = _fake_run(client, {HOST_TAG: "another-machine", HEARTBEAT_TAG: f"{now - 3600:.3f}"})
    fresh = _fake_run(client, {HOST_TAG: "another-machine", HEARTBEAT_TAG: f"{now:.3f}"})
    dead_child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_tags = liveness.process_tags(dead_child.pid)
    dead_child.wait()
    orphan = _fake_run(client, dead_tags)
    alive = _fake_run(client, liveness.process_tags())  # this very process

    reaped = set(liveness.reap_dead_runs(client))
    assert reaped == {stale, orphan}
    assert "no heartbeat" in client.get_run(stale).data.tags["workbench.error"]
    assert "is gone" in client.get_run(orphan).data.tags["workbench.error"]
    assert client.get_run(fresh).info.status == client.get_run(alive).info.status == "RUNNING"


@pytest.mark.parametrize("batch,accum", [(4, 2), (2, 4)])
def test_batch_times_accumulation_pairs_give_the_same_trajectory(store_uri, batch, accum):
    client = MlflowClient(store_uri)
    base = run(
        fast_spec(train={"steps": 8, "batch_size": 8, "grad_accum": 1, "eval_every": 100}),
        log=lambda *a: None,
    )
    other = run(
        fast_spec(train={"steps": 8, "batch_size": batch, "grad_accum": accum, "eval_every": 100}),
        log=lambda *a: None,
    )
    a = [v for _, v in _history(client, base.run_id)]
    b = [v for _, v in _history(client, other.run_id)]
    assert len(a) == len(b) == 8
    assert b == pytest.approx(a, rel=1e-4)


def test_the_same_seed_gives_the_same_run(store_uri):
    client = MlflowClient(store_uri)
    spec = fast_spec(train={"steps": 8, "eval_every": 4, "seed": 3})
    first, second = run(spec, log=lambda *a: None), run(spec, log=lambda *a: None)
    assert _history(client, first.run_id) != []
    assert [v for _, v in _history(client, first.run_id)] == [
        v for _, v in _history(client, second.run_id)
    ]
    assert first.objectives == second.objectives
    other_seed = run(fast_spec(train={"steps": 8, "eval_every": 4, "seed": 4}), log=lambda *a: None)
    assert [v for _, v in _history(client, other_seed.run_id)] != [
        v for _, v in _history(client, first.run_id)
    ]


WRITER = textwrap.dedent("""
    import sys
    from workbench import tracking
    from workbench.spec.run_spec import RunSpec

    index, points = int(sys.argv[1]), int(sys.argv[2])
    client = tracking.connect()
    run_id = tracking.start_run(client, RunSpec.parse({"tracking": {"experiment": "concurrent"}}))
    with tracking.RunRecorder(client, run_id, flush_every_s=0.05, max_buffer=20) as recorder:
        for step in range(points):
            recorder.log_metrics({"train/loss": step + index / 10, "train/other": -step}, step=step)
    print(run_id)
""")


def test_four_processes_logging_to_one_sqlite_store_lose_nothing(store_uri, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    tracking.connect()  # create the store's tables once, as the first run would
    points = 300
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(points)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
        assert "database is locked" not in err
    client = MlflowClient(store_uri)
    for index, (out, _) in enumerate(outputs):
        run_id = out.strip().splitlines()[-1]
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in ("train/loss", "train/other"):
            history = _history(client, run_id, key)
            assert [s for s, _ in history] == list(range(points)), (index, key)
        assert [v for _, v in _history(client, run_id)] == [s + index / 10 for s in range(points)]


def _start_mlflow_server(port: int, backend: str, artifacts: str) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            artifacts,
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )

    def healthy() -> bool:
        assert server.poll() is None, "the MLflow server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    # About 6 s on 2 idle cores (1 worker, no job processes); 180 s for a loaded machine.
    wait_until(healthy, 180, "the MLflow server answers /health", poll_s=0.5)
    return server


def _stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


def test_training_survives_the_tracking_server_going_away(tmp_path):
    """Kill the server mid-run: the run trains to the end, keeps every point in a fallback
    file it names, and replaying that file after a restart completes the run in the store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    artifacts = (tmp_path / "server-artifacts").as_uri()
    uri = f"http://127.0.0.1:{port}"
    server = _start_mlflow_server(port, backend, artifacts)
    work = tmp_path / "work"
    spec = fast_spec(train={"steps": 60, "eval_every": 60}, tracking={"experiment": "outage"})
    trainer = _start_held_run(work, spec, 5, env={"MLFLOW_TRACKING_URI": uri})
    try:
        _wait_held(trainer, work, 5)  # step 5 of 60: the run has most of its steps to go
        client = MlflowClient(uri)
        (held,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        run_id = held.info.run_id
        _stop(server)  # the tracking server goes away mid-run
        (work / "release").touch()
        out, err = trainer.communicate(timeout=600)
    finally:
        _stop(server)
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.communicate()
    assert trainer.returncode == 0, out[-2000:] + err[-3000:]  # training was not killed
    fallback = work / "mlruns" / "unsent" / f"{run_id}.jsonl"
    assert fallback.is_file() and str(fallback.name) in err  # and the user was told where
    assert (work / "mlruns" / "unsent" / f"{run_id}-model").is_dir(), err[
        -4000:
    ]  # weights kept too

    server = _start_mlflow_server(port, backend, artifacts)
    try:
        tracking.replay_fallback(fallback, MlflowClient(uri))
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [s for s, _ in _history(client, run_id)] == list(range(1, 61))
        assert [s for s, _ in _history(client, run_id, "objective/correctness")] == [0, 60]
    finally:
        _stop(server)
