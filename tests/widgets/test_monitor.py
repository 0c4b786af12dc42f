"""RunMonitor headless: launching runs, sweeps and searches from a notebook, watching them
through MLflow, re-attaching after a kernel restart, and stopping them."""

from __future__ import annotations

import pytest

from tests.conftest import fast_spec, wait_until
from workbench import tracking
from workbench.fronts import plots
from workbench.spec import mlflow_names
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec
from workbench.widgets import ExperimentBuilder, RunMonitor
from workbench.widgets.monitor import LOSS_TITLE, draw_run_curves, empty_panels, panel_order


def _curves(scale: float) -> dict:
    return {
        "train/loss": [(s, scale / s) for s in range(1, 6)],
        "train/lr": [(s, 1e-4) for s in range(1, 6)],
        "train/sft": [(s, 2 * scale / s) for s in range(1, 6)],
        "train/brevity": [(s, 0.5) for s in range(1, 6)],
    }


def test_monitor_charts_one_legend_entry_per_run_and_the_learning_rate_apart():
    """Headless: each run's lines share its colour and one legend entry; every metric has a
    panel of its own (the learning rate last, never on the loss's axis); the figure sets no
    width, so it fits its cell; drawing again updates the lines in place."""
    figure = empty_panels(LOSS_TITLE)
    draw_run_curves(figure, "correctness=0.7", "run-a", plots.run_color(0), _curves(1.0))
    draw_run_curves(figure, "correctness=0.3", "run-b", plots.run_color(1), _curves(2.0))
    assert plots.legend_entries(figure) == ["correctness=0.7", "correctness=0.3"]
    assert len(figure.data) == 8
    assert panel_order(_curves(1.0)) == ["train/loss", "train/brevity", "train/sft", "train/lr"]
    titles = [a.text for a in figure.layout.annotations]
    assert titles == [
        "<b>training loss</b>",
        "<b>training term brevity</b>",
        "<b>training term sft</b>",
        "<b>learning rate</b>",
    ]
    axes = {t.meta: (t.xaxis, t.yaxis) for t in figure.data if t.legendgroup == "run-a"}
    assert axes == {
        "train/loss": ("x", "y"),
        "train/brevity": ("x2", "y2"),
        "train/sft": ("x3", "y3"),
        "train/lr": ("x4", "y4"),
    }
    assert {t.line.color for t in figure.data if t.legendgroup == "run-b"} == {plots.run_color(1)}
    assert figure.layout.width is None and figure.layout.autosize
    # The constant learning rate is drawn at its value (plotly would pad it to -1..1).
    assert list(figure.layout.yaxis4.range) == pytest.approx([0.5e-4, 1.5e-4])
    assert figure.layout.yaxis.range is None and figure.layout.yaxis.autorange is not False
    assert figure.layout.yaxis4.tickformat == ".2~e"  # 3e-4, as learning rates are written
    assert figure.layout.title.text == LOSS_TITLE

    # Later points update the lines; a metric seen later gets a panel, before the rate's.
    more = dict(
        _curves(1.0), **{"train/loss": [(s, 1.0 / s) for s in range(1, 9)], "train/kl": [(1, 0.1)]}
    )
    draw_run_curves(figure, "correctness=0.7", "run-a", plots.run_color(0), more)
    assert len(figure.data) == 9
    assert plots.legend_entries(figure) == ["correctness=0.7", "correctness=0.3"]
    loss = next(t for t in figure.data if t.legendgroup == "run-a" and t.meta == "train/loss")
    assert list(loss.x) == list(range(1, 9))
    rate = next(t for t in figure.data if t.legendgroup == "run-b" and t.meta == "train/lr")
    assert (rate.xaxis, rate.yaxis) == ("x5", "y5")
    assert figure.layout.annotations[-1].text == "<b>learning rate</b>"


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
    drawn = {
        (t.legendgroup, t.meta) for t in (*monitor.loss_figure.data, *monitor.objective_figure.data)
    }
    assert {
        (short_id, "train/loss"),
        (short_id, "train/lr"),
        (short_id, "objective/correctness"),
        (short_id, "objective/length"),
    } <= drawn
    # One legend entry per run in each chart, named after the run.
    for figure in (monitor.loss_figure, monitor.objective_figure):
        assert sorted(plots.legend_entries(figure)) == sorted(r.name for r in monitor.rows.values())
    loss = next(
        t for t in monitor.loss_figure.data if (t.legendgroup, t.meta) == (short_id, "train/loss")
    )
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
    assert {
        client.get_run(run_id).data.tags[mlflow_names.TAG_PARENT] for run_id in monitor.rows
    } == {parent["run_id"]}


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


def test_a_run_preparing_its_base_says_what_it_does_then_its_step():
    from workbench.tracking import run_listing
    from workbench.widgets.monitor import progress_text

    row = run_listing.RunRow("a" * 32, "sft order", "RUNNING", "tests", None, 100)
    preparing = run_listing.RunProgress(
        row, None, None, 30.0, None, phase="pretraining step 160/800  loss 2.913"
    )
    assert progress_text(preparing) == "running, preparing: pretraining step 160/800  loss 2.913"
    row.step = 40
    training = run_listing.RunProgress(row, 1.25, 0.5, 50.0, 30.0)
    assert progress_text(training) == "running, step 40/100, loss 1.25, ETA 30 s"
