"""Runs side by side: launched runs divide the cores, write progress lines to their log, and
`workbench run` ends by saying where the run is and what to do next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import fast_spec, run_cli, wait_until
from workbench import tracking
from workbench.running import core_share, liveness
from workbench.running.launcher import launch
from workbench.spec.mlflow_names import HOST_TAG, PID_TAG, START_TAG, THREADS_TAG
from workbench.spec.run_spec import RunSpec


def test_share_counts_live_runs_on_this_host(store_uri, monkeypatch):
    client = tracking.connect(store_uri)
    spec = RunSpec.parse(fast_spec())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        alive = []
        for pid in (None, sleeper.pid):  # this process and another live one
            run_id = tracking.start_run(client, spec)
            for key, value in liveness.process_tags(pid).items():
                client.set_tag(run_id, key, value)
            alive.append(run_id)
        dead = tracking.start_run(client, spec)  # RUNNING, but no live process
        client.set_tag(dead, PID_TAG, "999999999")
        client.set_tag(dead, START_TAG, "0")
        client.set_tag(dead, HOST_TAG, liveness.this_host())
        assert sorted(core_share.live_runs_on_this_host(client)) == sorted(alive)
        new = tracking.start_run(client, spec)
        assert core_share.share(client, new) == max(1, core_share.cores() // 3)
        monkeypatch.setattr(core_share, "cores", lambda: 8)
        assert core_share.share(client, new) == 2
        assert core_share.share(client, alive[0]) == 4  # a run counts itself once
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_two_launched_runs_share_the_cores_and_log_progress(store_uri, monkeypatch):
    for name in core_share.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)  # no user setting: the runs divide the cores
    client = tracking.connect(store_uri)

    def threads(handle) -> int | None:
        value = client.get_run(handle.run_id).data.tags.get(THREADS_TAG)
        return int(value) if value else None

    # The first run trains far longer than the test lasts, so it is certainly alive while
    # the second starts and while it looks again; the test stops it once it has lowered.
    first = launch(fast_spec(train={"steps": 1_000_000, "eval_every": 1_000_000}))
    second = None
    try:
        # Launch to the first share on 2 idle cores: about 6 s.
        wait_until(lambda: threads(first), 300, "the first run takes its share")
        assert threads(first) == core_share.cores()  # alone, it takes every core
        second = launch(fast_spec(train={"steps": 30, "eval_every": 15}))
        assert second.wait(timeout=600) == "FINISHED", Path(second.log_path).read_text()[-3000:]
        # The second counted the first as live; the first, training, lowers its share at
        # its next look (every 3 s of training), so together they never ask for more cores.
        assert threads(second) == max(1, core_share.cores() // 2)
        wait_until(
            lambda: threads(first) + threads(second) <= max(core_share.cores(), 2),
            120,
            "the first run lowers its share",
        )
        assert first.status() == "RUNNING"
    finally:
        first.stop()
        if second is not None and second.alive():
            second.stop()
    log = Path(second.log_path).read_text()
    assert f"run {second.run_id}: training 30 steps" in log
    assert "step 0/30  base model: correctness=" in log
    assert "step 15/30  evaluation: correctness=" in log
    assert "step 30/30  loss " in log
    assert log.rstrip().endswith("run ended FINISHED")


@pytest.mark.slow
def test_threads_set_by_the_user_are_kept(store_uri, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    handle = launch(fast_spec(train={"steps": 2, "eval_every": 2}, eval={"max_new_tokens": 2}))
    assert handle.wait(timeout=600) == "FINISHED", Path(handle.log_path).read_text()[-3000:]
    assert tracking.connect(store_uri).get_run(handle.run_id).data.tags[THREADS_TAG] == "1"


@pytest.mark.slow
def test_run_ends_with_where_it_is_stored_objectives_against_base_and_next_commands(
    store_uri, tmp_path
):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(tracking={"experiment": "ending"})))
    done = run_cli("run", str(spec_file))
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    run_id = (
        tracking.connect(store_uri)
        .search_runs([tracking.connect(store_uri).get_experiment_by_name("ending").experiment_id])[
            0
        ]
        .info.run_id
    )
    assert f"run {run_id} FINISHED: experiment 'ending' in {store_uri}" in out
    if sys.platform.startswith("linux"):  # `workbench run` restarted itself on mimalloc
        tags = tracking.connect(store_uri).get_run(run_id).data.tags
        assert tags["workbench.allocator"].startswith("mimalloc "), tags
    assert "objective" in out and "base model" in out and "this run" in out
    assert "correctness (max)" in out and "length (min)" in out
    assert "workbench front --experiment ending" in out
    assert "workbench ui" in out
    assert f"workbench export {run_id} DIR" in out
