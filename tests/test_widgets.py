"""The widgets, headless: set controls, click buttons, and check the RunSpec they make, the
runs they launch and stop, and what MLflow then holds; the explorer's ranking and marks
against a brute-force computation over runs written straight into a store."""

from __future__ import annotations

import html
import itertools
import types

import numpy as np
import pytest
import yaml

from tests.conftest import fast_spec, wait_until
from workbench import pareto, registry, tracking
from workbench.spec import RunSpec
from workbench.widgets import ExperimentBuilder, ParetoExplorer, RunMonitor, forms
from workbench.widgets.explorer import PREFERRED, UNREACHABLE


def test_builder_makes_the_spec_its_controls_show(store_uri):
    builder = ExperimentBuilder(fast_spec())
    assert builder.spec == RunSpec.parse(fast_spec()) and builder.error == ""
    assert registry.METHODS["mo-sft"].formula in builder.method_info.value
    assert "MORepair" in builder.method_info.value

    builder.weights[0].value = 0.8  # on the simplex: the other weight follows
    assert [s.value for s in builder.weights] == pytest.approx([0.8, 0.2])
    builder.adapter.value = "lora"
    builder.adapter_params.controls["r"].value = 4
    builder.adapter_params.controls["target_modules"].value = "q_proj, v_proj"
    builder.steps.value = 25
    builder.lr.value = 0.001
    builder.kernels.value = "torch"
    builder.experiment.value = "from-the-builder"
    expected = fast_spec(adapter={"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                         optimizer={"lr": 0.001}, kernels="torch",
                         tracking={"experiment": "from-the-builder"})
    expected["train"]["steps"] = 25
    expected["objectives"] = [dict(o.model_dump(mode="json"), weight=w) for o, w in
                              zip(RunSpec.parse(fast_spec()).objectives, (0.8, 0.2))]
    assert builder.spec == RunSpec.parse(expected)

    builder.simplex.value = False  # free weights: moving one leaves the other
    builder.weights[1].value = 0.9
    assert [s.value for s in builder.weights] == pytest.approx([0.8, 0.9])
    builder.simplex.value = True  # back on the simplex: rescaled to sum 1
    assert sum(s.value for s in builder.weights) == pytest.approx(1.0)

    # "Show the code": the YAML and the Python both give back the same spec.
    builder.show_code.click()
    assert "workbench.launch(spec)" in builder.code.value
    yaml_text, python = builder.render_code()
    assert RunSpec.from_yaml(yaml_text) == builder.spec
    namespace: dict = {}
    exec(python.replace("handle = workbench.launch(spec)", ""), namespace)
    assert namespace["spec"] == builder.spec


def test_builder_shows_a_bad_setting_next_to_its_control():
    builder = ExperimentBuilder(fast_spec())
    builder.adapter.value = "lora"
    builder.adapter_params.controls["r"].value = 0  # no exception: a message instead
    assert builder.spec is None
    assert "adapter.r = 0" in builder.error
    assert "adapter.r = 0" in builder.adapter_params.errors["r"].value
    assert builder.field_errors["train.steps"].value == ""
    builder.adapter_params.controls["r"].value = 8
    assert builder.spec is not None and builder.adapter_params.errors["r"].value == ""

    builder.steps.value = 0
    assert "train.steps = 0" in builder.field_errors["train.steps"].value
    builder.steps.value = 10
    builder.data.value = "sortt"  # a typo: the message, and the objectives stay
    assert builder.spec is None and "did you mean 'sort'" in html.unescape(builder.field_errors["data"].value)
    builder.data.value = "order"
    builder.method.value = "sft"  # the task's objectives keep only the terms sft has
    assert builder.spec is not None and builder.spec.method.name == "sft"
    assert all(o.term in (None, "completion") for o in builder.spec.objectives)
    builder.method.value = "mo-sft"
    assert [o.term for o in builder.spec.objectives] == ["answer", "brevity"]
    builder.data.value = "explain"  # a task brings its own objectives
    assert [o.name for o in builder.spec.objectives] == ["correctness", "explanation", "length"]
    assert len(builder.weights) == 3
    builder.show_code.click()
    assert "data:\n  source: explain" in builder.code.value


def test_simplex_rescale_and_error_lines():
    assert forms.simplex_rescale([0.5, 0.3, 0.2], 0, 0.8) == pytest.approx([0.8, 0.12, 0.08])
    assert forms.simplex_rescale([1.0, 0.0, 0.0], 0, 0.4) == pytest.approx([0.4, 0.3, 0.3])
    errors = forms.errors_by_field("invalid run spec:\n  adapter.r = 0: too small\n"
                                   "  (spec) = {'model': 1}: objectives: all training weights are 0")
    assert errors == {"adapter.r": "adapter.r = 0: too small",
                      "": "objectives: all training weights are 0"}


# ----------------------------------------------------------------------- the explorer


def _store_finished_runs(points, experiment="explore"):
    """Runs with only objective metrics, written straight into the store (no training)."""
    client = tracking.connect()
    spec = RunSpec.parse(fast_spec(tracking={"experiment": experiment}))
    ids = []
    for i, (correctness, length) in enumerate(points):
        run_id = tracking.start_run(client, spec.updated(**{"tracking.run_name": f"r{i}"}))
        for step, scale in ((0, 0.5), (10, 1.0)):
            client.log_metric(run_id, "objective/correctness", correctness * scale, step=step)
            client.log_metric(run_id, "objective/length", length * scale, step=step)
        tracking.end_run(client, run_id, "FINISHED")
        ids.append(run_id)
    return ids


def test_explorer_ranks_and_marks_like_brute_force(store_uri):
    rng = np.random.default_rng(3)
    t = rng.uniform(0.05, 0.95, size=14)
    # correctness (max) against length (min), a front bent the non-convex way in places.
    points = np.column_stack([t, 14 * t**2 + rng.normal(0, 0.6, size=14).clip(0)])
    ids = _store_finished_runs(points.tolist())
    explorer = ParetoExplorer("explore")
    assert [r["run_id"] for r in explorer.runs] == ids
    np.testing.assert_allclose(explorer.front.points, points)
    directions = ["max", "min"]
    mask = pareto.non_dominated(points, directions)
    assert explorer.front.mask.tolist() == mask.tolist()
    assert f"hypervolume {explorer.front.hypervolume:.4g}" in explorer.summary.value

    # Unreachable marks: front points beaten by a mix of weights, for every weight on a grid.
    f = np.column_stack([-(points[:, 0]), points[:, 1]])
    f = (f - f.min(axis=0)) / (f.max(axis=0) - f.min(axis=0))
    reached = {int(np.argmin(np.where(mask, w * f[:, 0] + (1 - w) * f[:, 1], np.inf)))
               for w in np.linspace(0, 1, 20001)}
    marked = set(next(t for t in explorer.figure.data if t.name == UNREACHABLE).customdata.tolist())
    assert marked == set(np.flatnonzero(mask)) - reached

    for (w0, w1), scalarisation in itertools.product(((0.9, 0.1), (0.3, 0.7), (0.0, 1.0)),
                                                     ("weighted_sum", "chebyshev")):
        explorer.sliders[0].value, explorer.sliders[1].value = w0, w1
        explorer.scalarisation.value = scalarisation
        w = np.array([w0, w1]) / (w0 + w1)
        scores = [(w * row).sum() if scalarisation == "weighted_sum" else (w * row).max() for row in f]
        best = int(np.argmin(scores))
        preferred = next(t for t in explorer.figure.data if t.name == PREFERRED)
        assert list(preferred.customdata) == [best]
        assert list(explorer.ranking()) == sorted(range(len(scores)), key=lambda i: (scores[i], i))
        assert f"<td>1</td><td>r{best}</td>" in explorer.ranking_html.value

    # A click on a point shows that run's spec and metrics.
    front_trace = next(t for t in explorer.figure.data if t.name == "Pareto front")
    explorer._clicked(front_trace, types.SimpleNamespace(point_inds=[0]), None)
    row = int(front_trace.customdata[0])
    assert ids[row] in explorer.details.value
    shown = explorer.details.value.split("<pre", 1)[1].split(">", 1)[1].split("</pre>")[0]
    assert yaml.safe_load(html.unescape(shown))["tracking"]["run_name"] == f"r{row}"
    assert "objective/correctness" in explorer.details.value


# ----------------------------------------------------------------------- the monitor


@pytest.mark.slow
def test_monitor_launches_watches_reattaches_and_stops(store_uri):
    builder = ExperimentBuilder(fast_spec(tracking={"experiment": "monitored"},
                                          train={"steps": 12, "eval_every": 6}))
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
        return monitor.rows[long_handle.run_id].bar.value > 0 and monitor.rows[short_id].status == "FINISHED"

    wait_until(long_run_trains, 240, "the short run finished and the long one trains")
    short = monitor.rows[short_id]
    assert short.bar.value == short.bar.max == 12 and short.bar.bar_style == "success"
    traces = {t.name for t in monitor.loss_figure.data} | {t.name for t in monitor.objective_figure.data}
    assert {f"{short.name} train/loss", f"{short.name} objective/correctness",
            f"{short.name} objective/length"} <= traces
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
