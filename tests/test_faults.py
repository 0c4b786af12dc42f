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

from tests.conftest import fast_spec, run_cli
from workbench import liveness, tracking
from workbench.launcher import launch
from workbench.runner import run
from workbench.spec import RunSpec

RESUMABLE = fast_spec(train={"steps": 40, "checkpoint_every": 5, "eval_every": 20})


def _history(client, run_id, key="train/loss"):
    return tracking.metric_history(client, run_id, key)


def test_sigkilled_run_is_reaped_failed_then_resumes_to_the_uninterrupted_result(store_uri):
    client = MlflowClient(store_uri)
    reference = run(RESUMABLE, log=lambda *a: None)

    handle = launch(RESUMABLE)
    kill_after = random.Random().randint(6, 30)  # a random step, reported on failure
    deadline = time.monotonic() + 180
    while len(_history(client, handle.run_id)) < kill_after:
        assert time.monotonic() < deadline, f"no progress to step {kill_after}"
        time.sleep(0.05)
    os.killpg(handle.pid, signal.SIGKILL)
    handle._popen.wait(timeout=30)

    # Within a bounded time the run is FAILED, by the reaper that every listing runs.
    deadline = time.monotonic() + 30
    while client.get_run(handle.run_id).info.status == "RUNNING":
        liveness.reap_dead_runs(client)
        assert time.monotonic() < deadline, "the killed run is still RUNNING"
        time.sleep(0.5)
    dead = client.get_run(handle.run_id)
    assert dead.info.status == "FAILED", kill_after
    assert "is gone" in dead.data.tags["workbench.error"]

    result = run_cli("resume", handle.run_id, "--no-progress")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    resumed = client.get_run(handle.run_id)
    assert resumed.info.status == "FINISHED"
    steps = [s for s, _ in _history(client, handle.run_id)]
    assert steps == list(range(1, 41)), f"killed after step {kill_after}: {steps}"
    # Same seed, restored optimizer/scheduler/RNG/data position: the very same numbers.
    resumed_losses = [v for _, v in _history(client, handle.run_id)]
    assert resumed_losses == [v for _, v in _history(client, reference.run_id)], kill_after
    for name, value in reference.objectives.items():
        assert resumed.data.metrics[f"objective/{name}"] == value, (name, kill_after)
    evaluations = [s for s, _ in _history(client, handle.run_id, "objective/correctness")]
    assert evaluations == [0, 20, 40], evaluations


def test_resume_without_a_checkpoint_is_a_clear_error(store_uri):
    result = run(fast_spec(train={"steps": 3}), log=lambda *a: None)
    out = run_cli("resume", result.run_id)
    assert out.returncode == 2 and "no checkpoint" in out.stderr and "checkpoint_every" in out.stderr


def _fake_run(client, tags):
    run_id = tracking.start_run(client, RunSpec.parse(fast_spec()))
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def test_reaper_ends_stale_and_orphaned_runs_and_spares_live_ones(store_uri):
    client = tracking.connect()
    now = time.time()
    stale = _fake_run(client, {liveness.HOST_TAG: "another-machine",
                               liveness.HEARTBEAT_TAG: f"{now - 3600:.3f}"})
    fresh = _fake_run(client, {liveness.HOST_TAG: "another-machine",
                               liveness.HEARTBEAT_TAG: f"{now:.3f}"})
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
    base = run(fast_spec(train={"steps": 8, "batch_size": 8, "grad_accum": 1, "eval_every": 100}),
               log=lambda *a: None)
    other = run(fast_spec(train={"steps": 8, "batch_size": batch, "grad_accum": accum, "eval_every": 100}),
                log=lambda *a: None)
    a = [v for _, v in _history(client, base.run_id)]
    b = [v for _, v in _history(client, other.run_id)]
    assert len(a) == len(b) == 8
    assert b == pytest.approx(a, rel=1e-4)


def test_the_same_seed_gives_the_same_run(store_uri):
    client = MlflowClient(store_uri)
    spec = fast_spec(train={"steps": 8, "eval_every": 4, "seed": 3})
    first, second = run(spec, log=lambda *a: None), run(spec, log=lambda *a: None)
    assert _history(client, first.run_id) != []
    assert [v for _, v in _history(client, first.run_id)] == [v for _, v in _history(client, second.run_id)]
    assert first.objectives == second.objectives
    other_seed = run(fast_spec(train={"steps": 8, "eval_every": 4, "seed": 4}), log=lambda *a: None)
    assert [v for _, v in _history(client, other_seed.run_id)] != [v for _, v in _history(client, first.run_id)]


WRITER = textwrap.dedent("""
    import sys
    from workbench import tracking
    from workbench.spec import RunSpec

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
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(points)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
             for i in range(4)]
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
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend, "--artifacts-destination", artifacts, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "MLflow server did not start"
        time.sleep(0.5)


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
    work.mkdir()
    spec_file = work / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(train={"steps": 300, "eval_every": 300},
                                                  tracking={"experiment": "outage"})))
    trainer = subprocess.Popen([sys.executable, "-m", "workbench.cli", "run", str(spec_file), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work,
                               env=dict(os.environ, MLFLOW_TRACKING_URI=uri))
    try:
        client = MlflowClient(uri)
        deadline = time.monotonic() + 120
        run_id = None
        while run_id is None or len(_history(client, run_id)) < 5:
            assert trainer.poll() is None and time.monotonic() < deadline, "the run did not start logging"
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            run_id = runs[0].info.run_id if runs else None
            time.sleep(0.3)
        _stop(server)  # the tracking server goes away mid-run
        out, err = trainer.communicate(timeout=300)
    finally:
        _stop(server)
        if trainer.poll() is None:
            trainer.kill()
    assert trainer.returncode == 0, out[-2000:] + err[-3000:]  # training was not killed
    fallback = work / "mlruns" / "unsent" / f"{run_id}.jsonl"
    assert fallback.is_file() and str(fallback.name) in err  # and the user was told where
    assert (work / "mlruns" / "unsent" / f"{run_id}-model").is_dir(), err[-4000:]  # weights kept too

    server = _start_mlflow_server(port, backend, artifacts)
    try:
        tracking.replay_fallback(fallback, MlflowClient(uri))
        client = MlflowClient(uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [s for s, _ in _history(client, run_id)] == list(range(1, 301))
        assert [s for s, _ in _history(client, run_id, "objective/correctness")] == [0, 300]
    finally:
        _stop(server)
