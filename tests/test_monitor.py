"""RunMonitor headless: launching runs, sweeps and searches from a notebook, watching them
through MLflow, re-attaching after a kernel restart, and stopping them."""

from __future__ import annotations

import pytest

from tests.conftest import fast_spec, wait_until
from workbench import tracking
from workbench.errors import SpecError
from workbench.spec import RunSpec
from workbench.widgets import ExperimentBuilder, RunMonitor


@pytest.mark.slow
def test_monitor_launches_watches_reattaches_and_stops(store_uri):
    builder = ExperimentBuilder(
        fast_spec(tracking={"experiment": "monitored"}, train={"steps": 12, "eval_every": 6})
    )
    builder.weights[0].value = 0.7
    monitor = RunMonitor(builder=builder, poll_s=None, threads=1)
    monitor.launch_button.click()
    (short_id,) = monitor.rows
    builder.steps.value = 100_000  # a run that is still going when it is stopped
    long_handle = monitor.launch()
    client = tracking.connect()
    params = client.get_run(short_id).data.params
    assert params["objectives.correctness.weight"] == "0.7"
    assert params["objectives.length.weight"] == "0.3"

    # Sized from measurement: the two runs start in ~25 s together on 2 idle cores.
    def long_run_trains():
        monitor.refresh()
        return (
            monitor.rows[long_handle.run_id].bar.value > 0
            and monitor.rows[short_id].status == "FINISHED"
        )

    wait_until(long_run_trains, 240, "the short run finished and the long one trains")
    short = monitor.rows[short_id]
    assert short.bar.value == short.bar.max == 12 and short.bar.bar_style == "success"
    traces = {t.name for t in monitor.loss_figure.data} | {
        t.name for t in monitor.objective_figure.data
    }
    assert {
        f"{short.name} train/loss",
        f"{short.name} objective/correctness",
        f"{short.name} objective/length",
    } <= traces
    loss = next(t for t in monitor.loss_figure.data if t.name == f"{short.name} train/loss")
    assert list(loss.x) == list(range(1, 13))
    assert "ETA" in monitor.rows[long_handle.run_id].label.value

    # A new monitor (a restarted kernel) finds the running run, and its Stop button kills it.
    again = RunMonitor("monitored", poll_s=None)
    assert list(again.rows) == [long_handle.run_id]
    again.rows[long_handle.run_id].stop.click()
    assert client.get_run(long_handle.run_id).info.status == "KILLED"
    assert again.rows[long_handle.run_id].bar.bar_style == "warning"
    assert again.rows[long_handle.run_id].stop.disabled
    assert long_handle.wait_exit(30)


@pytest.mark.slow
def test_monitor_launches_a_sweep_and_watches_its_children(store_uri):
    """A sweep in its own process: its two children are attached as they start and finish;
    the sweep's parent records the front. A bad design fails before any process starts."""
    spec = RunSpec.parse(
        fast_spec(tracking={"experiment": "swept"}, train={"steps": 3, "eval_every": 3})
    )
    monitor = RunMonitor(poll_s=None, threads=1)
    with pytest.raises(SpecError, match="points"):
        monitor.launch_sweep(spec, points=0)
    assert not monitor.studies
    sweep = monitor.launch_sweep(spec, points=2, parallel=2)

    # Sized from measurement: the sweep and its two 3-step children take ~40 s on 2 idle cores.
    def sweep_done():
        monitor.refresh()
        return not monitor.studies and len(monitor.rows) == 2 and not monitor.alive()

    wait_until(sweep_done, 300, "the sweep ended with both children watched")
    assert sweep.returncode == 0, monitor.message.value
    assert sorted(row.status for row in monitor.rows.values()) == ["FINISHED", "FINISHED"]
    assert "sweep of 2 points finished" in monitor.message.value
    client = tracking.connect()
    (parent,) = [
        r
        for r in tracking.runs_frame(client, "swept")
        if r["tags"].get("workbench.kind") == "sweep"
    ]
    assert "sweep/hypervolume" in parent["metrics"]
    assert {client.get_run(run_id).data.tags[tracking.TAG_PARENT] for run_id in monitor.rows} == {
        parent["run_id"]
    }


@pytest.mark.slow
def test_monitor_launches_a_search_and_watches_its_trials(store_uri):
    config = {
        **fast_spec(tracking={"experiment": "searched"}, train={"steps": 3, "eval_every": 3}),
        "search": {"space": {"optimizer.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}},
    }
    monitor = RunMonitor(poll_s=None, threads=1)
    with pytest.raises(SpecError, match="search"):
        monitor.launch_search({**config, "search": {}}, trials=2)
    search = monitor.launch_search(config, trials=2)

    # Sized from measurement: two 3-step trials one after another take ~40 s on 2 idle cores.
    def search_done():
        monitor.refresh()
        return not monitor.studies and len(monitor.rows) == 2 and not monitor.alive()

    wait_until(search_done, 300, "the search ended with both trials watched")
    assert search.returncode == 0, monitor.message.value
    assert "search of 2 trials finished" in monitor.message.value
    assert all(row.status in ("FINISHED", "KILLED") for row in monitor.rows.values())
    (parent,) = [
        r
        for r in tracking.runs_frame(tracking.connect(), "searched")
        if r["tags"].get("workbench.kind") == "study"
    ]
    assert "study/hypervolume" in parent["metrics"]
