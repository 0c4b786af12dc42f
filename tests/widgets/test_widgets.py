"""The widgets, headless: set controls, click buttons, and check the RunSpec they make, the
runs they launch and stop, and what MLflow then holds; the explorer's ranking and marks
against a brute-force computation over runs written straight into a store; its axes and
trajectories, and RunCompare's spec diff, curves and samples over hand-built runs."""

from __future__ import annotations

import html
import itertools
import types

import numpy as np
import pytest
import yaml

from tests.conftest import fast_spec
from workbench import tracking
from workbench.fronts import finished_runs as fronts
from workbench.fronts import pareto
from workbench.spec import mlflow_names, registry
from workbench.spec.run_spec import RunSpec
from workbench.widgets import (
    ExperimentBuilder,
    ParetoExplorer,
    RunCompare,
    forms,
    readable,
)
from workbench.widgets import run_compare_logic as comparison
from workbench.widgets.explorer import (
    ALL_AXES,
    OVERLAY,
    PARALLEL,
    PREFERRED,
    TRAJECTORY,
    UNREACHABLE,
)
from workbench.widgets.run_compare_logic import last_samples


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
    expected = fast_spec(
        adapter={"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        optimizer={"lr": 0.001},
        kernels="torch",
        tracking={"experiment": "from-the-builder"},
    )
    expected["train"]["steps"] = 25
    expected["objectives"] = [
        dict(o.model_dump(mode="json"), weight=w)
        for o, w in zip(RunSpec.parse(fast_spec()).objectives, (0.8, 0.2))
    ]
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
    assert builder.spec is None and "did you mean 'sort'" in html.unescape(
        builder.field_errors["data"].value
    )
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
    errors = forms.errors_by_field(
        "invalid run spec:\n  adapter.r = 0: too small\n"
        "  (spec) = {'model': 1}: objectives: all training weights are 0"
    )
    assert errors == {
        "adapter.r": "adapter.r = 0: too small",
        "": "objectives: all training weights are 0",
    }


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
    reached = {
        int(np.argmin(np.where(mask, w * f[:, 0] + (1 - w) * f[:, 1], np.inf)))
        for w in np.linspace(0, 1, 20001)
    }
    marked = set(next(t for t in explorer.figure.data if t.name == UNREACHABLE).customdata.tolist())
    assert marked == set(np.flatnonzero(mask)) - reached

    for (w0, w1), scalarisation in itertools.product(
        ((0.9, 0.1), (0.3, 0.7), (0.0, 1.0)), ("weighted_sum", "chebyshev")
    ):
        explorer.sliders[0].value, explorer.sliders[1].value = w0, w1
        explorer.scalarisation.value = scalarisation
        w = np.array([w0, w1]) / (w0 + w1)
        scores = [
            (w * row).sum() if scalarisation == "weighted_sum" else (w * row).max() for row in f
        ]
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
    # What the run is comes first, then its metrics under readable names, the spec last.
    details = explorer.details.value
    order = [
        details.index(s)
        for s in (
            "method <b>mo-sft</b>",
            "training weight",
            "<b>metrics</b>",
            "the full spec (YAML)",
        )
    ]
    assert order == sorted(order)
    assert f">{points[row][0]:.4g}<" in details and "objective/correctness" not in details


# ----------------------------------------------------------------------- comparing runs


def test_spec_diff_sample_alignment_and_curve_order():
    params = [
        {"optimizer.lr": "0.001", "train.seed": "0", "adapter.r": "8", "tracking.run_name": "a"},
        {"optimizer.lr": "0.001", "train.seed": "1", "adapter.r": "8", "tracking.run_name": "b"},
        {"optimizer.lr": "0.01", "train.seed": "0", "tracking.run_name": "c"},
    ]
    diff = comparison.spec_diff(params, ["a", "b", "c"])
    assert diff.keys == ["adapter.r", "optimizer.lr", "train.seed"]  # run names are the columns
    assert diff.values == [["8", "8", None], ["0.001", "0.001", "0.01"], ["0", "1", "0"]]
    assert diff.marked == [[False, False, True], [False, False, True], [False, True, False]]
    assert diff.same == 0
    assert diff.table()[2] == {"param": "train.seed", "a": "0", "b": "1", "c": "0"}
    assert comparison.spec_diff(params[:1] * 2, ["x", "y"]).keys == []

    # The k-th asking of a prompt pairs with the k-th; the first run's order, then new prompts.
    aligned = comparison.align_samples(
        {
            "a": [
                {"prompt": "p1", "target": "t1", "completion": "a1", "exact_match": 1.0},
                {"prompt": "p2", "completion": "a2"},
                {"prompt": "p2", "completion": "a2'"},
            ],
            "b": [
                {"prompt": "p3", "completion": "b3"},
                {"prompt": "p2", "completion": "b2"},
                {"prompt": "p1", "completion": "b1", "exact_match": 0.0},
            ],
        }
    )
    assert [(s.prompt, s.completions) for s in aligned] == [
        ("p1", {"a": "a1", "b": "b1"}),
        ("p2", {"a": "a2", "b": "b2"}),
        ("p2", {"a": "a2'", "b": None}),
        ("p3", {"a": None, "b": "b3"}),
    ]
    assert aligned[0].target == "t1" and aligned[0].scores == {
        "a": {"exact_match": 1.0},
        "b": {"exact_match": 0.0},
    }

    runs = [
        {
            "run_id": "1" * 32,
            "run_name": "x",
            "metrics": {"objective/b": 1, "train/lr": 1, "perf/s": 1},
        },
        {"run_id": "2" * 32, "run_name": "x", "metrics": {"train/loss": 1, "objective/a": 1}},
    ]
    assert comparison.curve_keys(runs) == ["train/loss", "train/lr", "objective/a", "objective/b"]
    assert comparison.run_labels(runs) == ["x (11111111)", "x (22222222)"]


def _store_compared_runs(experiment="compare"):
    """Two runs written straight into the store: specs differing in lr and seed, loss and
    term curves, objectives at two evaluations, a sample table at each evaluation."""
    client = tracking.connect()
    ids = []
    for i, lr in enumerate((0.001, 0.01)):
        spec = RunSpec.parse(
            fast_spec(
                tracking={"experiment": experiment, "run_name": f"lr{lr}"},
                optimizer={"lr": lr},
                train={"seed": i},
            )
        )
        run_id = tracking.start_run(client, spec)
        for step in range(1, 11):
            client.log_metric(run_id, "train/loss", 2.0 / (step + i), step=step)
            client.log_metric(run_id, "train/answer", 1.5 / (step + i), step=step)
        for step in (5, 10):
            client.log_metric(run_id, "objective/correctness", 0.1 * step + i, step=step)
            client.log_metric(run_id, "objective/length", 10.0 - step + i, step=step)
            # The prompts in another order in each run; the last evaluation's table counts.
            prompts = ["3 1 2", "9 8", "5 5 1"][:: 1 if i == 0 else -1]
            client.log_table(
                run_id,
                {
                    "prompt": prompts,
                    "completion": [f"s{step} r{i} {p}" for p in prompts],
                    "prefix_accuracy": [float(i)] * 3,
                },
                f"samples/step_{step:06d}.json",
            )
        tracking.end_run(client, run_id, "FINISHED")
        ids.append(run_id)
    return client, ids


def test_run_compare_shows_diff_curves_and_samples(store_uri):
    client, ids = _store_compared_runs()
    compare = RunCompare(ids)
    assert compare.labels == ["lr0.001", "lr0.01"]
    assert compare.diff.keys == ["optimizer.lr", "train.seed"]
    assert compare.diff.marked == [[False, True], [False, True]]
    assert compare.spec_html.value.count("class='differs'") == 2
    assert "optimizer.lr" in compare.spec_html.value and "0.01" in compare.spec_html.value

    assert list(compare.figures) == [
        "train/loss",
        "train/answer",
        "objective/correctness",
        "objective/length",
    ]
    loss = compare.figures["train/loss"]
    assert [t.name for t in loss.data] == ["lr0.001", "lr0.01"]
    assert list(loss.data[1].x) == list(range(1, 11))
    assert list(loss.data[1].y) == pytest.approx([2.0 / (s + 1) for s in range(1, 11)])
    objective = compare.figures["objective/correctness"].data[0]
    assert list(objective.x) == [5, 10] and list(objective.y) == pytest.approx([0.5, 1.0])

    # Samples of the last evaluation, side by side by prompt (the first run's order).
    assert [s.prompt for s in compare.samples] == ["3 1 2", "9 8", "5 5 1"]
    for s in compare.samples:
        assert s.completions == {"lr0.001": f"s10 r0 {s.prompt}", "lr0.01": f"s10 r1 {s.prompt}"}
        assert s.scores == {"lr0.001": {"prefix_accuracy": 0.0}, "lr0.01": {"prefix_accuracy": 1.0}}
    assert html.escape("s10 r1 9 8") in compare.samples_html.value

    # A new point: the same FigureWidget, its trace updated in place.
    client.log_metric(ids[0], "train/loss", 0.1, step=11)
    compare.refresh()
    assert compare.figures["train/loss"] is loss and list(loss.data[0].x) == list(range(1, 12))

    # An experiment's name compares its finished runs; one run id is not a comparison.
    assert [r["run_id"] for r in RunCompare("compare").runs] == ids
    with pytest.raises(ValueError, match="two or more runs"):
        RunCompare(ids[:1])


THREE_OBJECTIVE_POINTS = [(0.2, 4.0, 1.0), (0.6, 8.0, 3.0), (0.9, 12.0, 2.0), (0.5, 9.0, 1.5)]


def _three_objective_runs(experiment: str) -> list[str]:
    """Finished runs over correctness (max), length (min) and heldout (min), three evaluations
    each (scaled 0.5, 0.8, 1 of THREE_OBJECTIVE_POINTS)."""
    client = tracking.connect()
    objectives = [
        *RunSpec.parse(fast_spec()).model_dump(mode="json")["objectives"],
        {"name": "heldout", "direction": "min", "source": "metric:eval_loss", "reference": 5.0},
    ]
    spec = RunSpec.parse(fast_spec(tracking={"experiment": experiment}, objectives=objectives))
    ids = []
    for i, values in enumerate(THREE_OBJECTIVE_POINTS):
        run_id = tracking.start_run(client, spec.updated(**{"tracking.run_name": f"r{i}"}))
        for step, scale in ((0, 0.5), (5, 0.8), (10, 1.0)):
            for name, value in zip(("correctness", "length", "heldout"), values):
                client.log_metric(run_id, f"objective/{name}", value * scale, step=step)
        tracking.end_run(client, run_id, "FINISHED")
        ids.append(run_id)
    return ids


def test_explorer_axes_and_trajectories(store_uri):
    client = tracking.connect()
    points = THREE_OBJECTIVE_POINTS
    ids = _three_objective_runs("axes")

    explorer = ParetoExplorer("axes")
    assert explorer.axes.value == ALL_AXES and explorer.trajectories.disabled
    assert {t.type for t in explorer.figure.data} == {"splom"} and len(explorer.sliders) == 3
    preferred = next(t for t in explorer.figure.data if t.name == PREFERRED)
    best = int(explorer.ranking()[0])
    assert list(preferred.customdata) == [best]
    assert [list(d.values) for d in preferred.dimensions] == [[v] for v in points[best]]
    assert explorer.axes.options[1:] == (
        ("correctness vs length", ("correctness", "length")),
        ("correctness vs heldout", ("correctness", "heldout")),
        ("length vs heldout", ("length", "heldout")),
    )

    # Two axes: the front of that plane, from the same function every view uses.
    explorer.axes.value = ("correctness", "heldout")
    runs = tracking.runs_frame(client, "axes")
    expected = fronts.front_from_runs(runs, ["correctness", "heldout"])
    assert explorer.front.names == ("correctness", "heldout")
    assert explorer.front.mask.tolist() == expected.mask.tolist() == [True, False, True, True]
    assert [s.description for s in explorer.sliders] == ["correctness", "heldout"]
    assert not explorer.trajectories.disabled

    # Trajectories: one path per run, its evaluations in step order, ending at its point.
    explorer.trajectories.value = True
    paths = [t for t in explorer.figure.data if t.legendgroup == TRAJECTORY]
    assert [t.name for t in paths] == ["r0", "r1", "r2", "r3"]
    for trace, (c, _, h) in zip(paths, points):
        assert list(trace.x) == pytest.approx([c * 0.5, c * 0.8, c])
        assert list(trace.y) == pytest.approx([h * 0.5, h * 0.8, h])
    assert explorer.figure.data[-1].name == PREFERRED  # the marks stay on top
    explorer._clicked(paths[2], types.SimpleNamespace(point_inds=[1]), None)
    assert ids[2] in explorer.details.value
    explorer.axes.value = ("length", "heldout")  # the paths follow the axes
    paths = [t for t in explorer.figure.data if t.legendgroup == TRAJECTORY]
    assert list(paths[0].x) == pytest.approx([2.0, 3.2, 4.0])
    explorer.trajectories.value = False
    assert not any(t.legendgroup == TRAJECTORY for t in explorer.figure.data)

    explorer.refresh()  # a reload keeps the chosen plane
    assert explorer.front.names == ("length", "heldout")
    assert ParetoExplorer("axes", axes=("heldout", "correctness")).axes.value == (
        "correctness",
        "heldout",
    )


def test_explorer_with_one_objective_ranks_its_runs(store_uri):
    """One objective: the 'front' is the best run; a slider move still re-ranks (no error)."""
    _store_finished_runs([(0.3, 1.0), (0.8, 2.0), (0.5, 3.0)], experiment="single")
    explorer = ParetoExplorer("single", names=["correctness"])
    assert explorer.front.names == ("correctness",) and len(explorer.sliders) == 1
    assert explorer.front.mask.tolist() == [False, True, False]
    explorer.sliders[0].value = 0.3
    preferred = next(t for t in explorer.figure.data if t.name == PREFERRED)
    assert list(preferred.customdata) == [1] and list(preferred.y) == ["r1"]
    assert list(explorer.ranking()) == [1, 2, 0]


def test_a_class_boards_runs_are_labelled_by_author(store_uri, monkeypatch):
    """Runs made with WORKBENCH_AUTHOR set carry it; the one front labels each by its author."""
    for author, points in (("ada", [(0.3, 2.0)]), ("grace", [(0.8, 5.0)])):
        monkeypatch.setenv(mlflow_names.AUTHOR_ENV, author)
        _store_finished_runs(points, experiment="class")
    monkeypatch.delenv(mlflow_names.AUTHOR_ENV)
    _store_finished_runs([(0.5, 9.0)], experiment="class")  # a run nobody signed
    explorer = ParetoExplorer("class")
    assert explorer.front.labels == ("ada: r0", "grace: r0", "r0")
    assert "3 runs by 2 authors" in explorer.summary.value
    assert [r["tags"].get(mlflow_names.TAG_AUTHOR) for r in explorer.runs] == ["ada", "grace", None]


def test_run_views_show_evaluation_and_training_samples_apart(store_uri):
    """An RL run stores the completions it sampled in training beside its evaluations': the
    views read each kind on its own (training tables sort after evaluation ones by name)."""
    (run_id,) = _store_finished_runs([(0.5, 3.0)], experiment="rl-views")
    client = tracking.connect()
    client.log_table(
        run_id, {"prompt": ["reverse a b"], "completion": [" b a"]}, "samples/step_000010.json"
    )
    client.log_table(
        run_id,
        {"prompt": ["reverse c d"], "completion": [" d"], "total": [0.25], "advantage": [-0.7]},
        "samples/train_step_000020.json",
    )
    assert last_samples(client, run_id) == [{"prompt": "reverse a b", "completion": " b a"}]
    assert last_samples(client, run_id, "training") == [
        {"prompt": "reverse c d", "completion": " d", "total": 0.25, "advantage": -0.7}
    ]
    explorer = ParetoExplorer("rl-views")
    explorer.select(0)
    shown = explorer.details.value
    assert "reverse a b" in shown and "completions sampled in training" in shown
    assert "total 0.25, advantage -0.7" in shown  # the scores beside the sample, not a raw dict


def test_explorer_overlays_other_builders_fronts(store_uri):
    """The sweep's front in the explorer with a merge grid's front drawn over it."""
    client = tracking.connect()
    spec = RunSpec.parse(fast_spec(tracking={"experiment": "builders"}))
    parents = {}
    for builder, points in (
        ("sweep", [(0.2, 3.0), (0.6, 8.0), (0.5, 9.0)]),
        ("merge", [(0.4, 4.0), (0.7, 9.5)]),
    ):
        parent = parents[builder] = tracking.start_run(
            client,
            spec.updated(**{"tracking.run_name": builder}),
            extra_tags={"workbench.kind": "sweep"},
        )
        for i, (correctness, length) in enumerate(points):
            run_id = tracking.start_run(
                client, spec.updated(**{"tracking.run_name": f"{builder}{i}"}), parent_run_id=parent
            )
            client.log_metric(run_id, "objective/correctness", correctness, step=10)
            client.log_metric(run_id, "objective/length", length, step=10)
            tracking.end_run(client, run_id, "FINISHED")
        tracking.end_run(client, parent, "FINISHED")
    explorer = ParetoExplorer(
        "builders", parent_run_id=parents["sweep"], overlays={"merge grid": parents["merge"]}
    )
    assert [r["run_name"] for r in explorer.runs] == ["sweep0", "sweep1", "sweep2"]
    (overlay,) = [t for t in explorer.figure.data if t.legendgroup == OVERLAY]
    merged = fronts.front_from_runs(
        tracking.runs_frame(client, "builders", parent_run_id=parents["merge"]),
        ["correctness", "length"],
    )
    assert overlay.name == f"merge grid (hypervolume {merged.hypervolume:.4g})"
    assert sorted(zip(overlay.x, overlay.y)) == [(0.4, 4.0), (0.7, 9.5)]
    assert explorer.figure.data[-1].name == PREFERRED  # the marks stay on top


def test_explorer_draws_parallel_coordinates_coloured_by_rank(store_uri):
    _three_objective_runs("parallel")
    explorer = ParetoExplorer("parallel")
    assert explorer.view.layout.display is None  # offered from three objectives
    explorer.view.value = "parallel"
    (trace,) = explorer.figure.data
    assert trace.type == "parcoords" and trace.name == PARALLEL
    points = np.array(THREE_OBJECTIVE_POINTS)
    for j, dimension in enumerate(trace.dimensions):
        assert list(dimension.values) == pytest.approx(points[:, j])
    # Up is better: the min objectives' axes run from their worst value at the bottom.
    assert list(trace.dimensions[1].range) == [12.0, 4.0] and list(trace.dimensions[0].range) == [
        0.2,
        0.9,
    ]
    for weights in ((1.0, 0.0, 0.0), (0.0, 0.5, 0.5)):
        for slider, value in zip(explorer.sliders, weights):
            slider.value = value
        scores = pareto.preference_scores(points, ["max", "min", "min"], list(weights))
        expected = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
        assert list(trace.line.color) == expected.tolist()
    explorer.view.value = "scatter"
    assert {t.type for t in explorer.figure.data} == {"splom"}


# ----------------------------------------------------------------------- reading at a glance


def test_metric_names_and_values_read_as_words_and_figures():
    assert readable.metric_label("cost/trainable_params") == "trainable parameters"
    assert readable.metric_value("cost/trainable_params", 3.7722e05) == "377,220"
    assert readable.metric_label("objective/correctness") == "correctness"
    assert readable.metric_label("objective/exact_match") == "exact match"
    assert readable.metric_label("train/loss") == "training loss"
    assert readable.metric_label("train/lr") == "learning rate"
    assert readable.metric_label("train/sft") == "training term sft"
    assert readable.metric_label("reward/correct/mean") == "reward correct (mean)"
    assert readable.metric_label("perf/peak_mem_mb") == "peak memory (MB)"
    assert readable.metric_value("perf/tokens_per_s", 12345.6) == "12,346"
    assert readable.metric_value("objective/correctness", 0.8125) == "0.8125"
    assert readable.metric_value("train/lr", 1e-4) == "1.000e-04"
    rows = readable.metric_rows(
        {
            "perf/step_s": 0.01,
            "cost/trainable_params": 5.0,
            "objective/length": 4.0,
            "train/loss": 2.0,
            "pref/margin": 1.0,
        },
        readable.DETAIL_PREFIXES,
    )
    assert [key for key, _, _ in rows] == [
        "objective/length",
        "train/loss",
        "cost/trainable_params",
        "perf/step_s",
    ]


def test_run_summary_and_samples_lead_with_what_the_run_is():
    params = RunSpec.parse(fast_spec()).flat_params()
    summary = readable.run_summary(params, {"correctness": 0.5})
    assert summary.method == "mo-sft" and summary.task == "order"
    assert "brevity_position_scale" in summary.method_settings
    by_name = {o.name: o for o in summary.objectives}
    assert by_name["correctness"].direction == "max" and by_name["correctness"].value == 0.5
    trained = [o for o in RunSpec.parse(fast_spec()).objectives if o.term]
    assert {o.name: by_name[o.name].weight for o in trained} == {o.name: o.weight for o in trained}
    rows = readable.sample_rows(
        [
            {
                "prompt": "order 3 1",
                "target": "1 3",
                "completion": "1 3",
                "correct": 1.0,
                "length": 2,
                "step": 10,
            }
        ]
    )
    assert rows == [readable.SampleRow("order 3 1", "1 3", "1 3", {"correct": 1.0, "length": 2.0})]
    assert readable.score_text(rows[0].scores) == "correct 1, length 2"
    assert readable.label_width(["a"]) == "80px"
    assert readable.label_width(["brevity position scale"], minimum=120) == "188px"


def test_builder_labels_in_words_and_kernels_this_machine_runs(monkeypatch):
    assert forms.param_label("brevity_position_scale") == "brevity position scale"
    assert forms.param_label("r", "rank") == "rank"
    assert forms.kernel_choices(cuda=False, triton=True) == ["auto", "torch", "off"]
    assert forms.kernel_choices(cuda=True, triton=False) == ["auto", "torch", "off"]
    assert forms.kernel_choices(cuda=True, triton=True) == ["auto", "triton", "torch", "off"]
    builder = ExperimentBuilder(fast_spec())
    assert builder.method_params.controls["brevity_position_scale"].description == (
        "brevity position scale"
    )
    assert all("_" not in c.description for c in builder.method_params.controls.values())
    import torch

    if not torch.cuda.is_available():
        assert "triton" not in builder.kernels.options
    # A base spec that asks for triton keeps its choice (shown, so it can be changed).
    monkeypatch.setattr(forms, "machine_kernel_choices", lambda: ["auto", "torch", "off"])
    kept = ExperimentBuilder(fast_spec(kernels="triton"))
    assert kept.kernels.value == "triton" and "triton" in kept.kernels.options


def test_explorer_counts_runs_that_share_a_point(store_uri):
    """Six runs on three spots: three markers, each counting its runs and listing them on hover;
    a click shows the run and names the others at its point."""
    _store_finished_runs(
        [(0.5, 3.0), (0.5, 3.0), (0.9, 6.0), (0.9, 6.0), (0.2, 1.0), (0.2, 1.0)], experiment="twins"
    )
    explorer = ParetoExplorer("twins")
    drawn = [t for t in explorer.figure.data if t.name in ("Pareto front", "dominated runs")]
    assert sum(len(t.x) for t in drawn) == 3
    hovers = [h for t in drawn for h in t.hovertext]
    assert sorted(hovers) == [
        "2 runs here:<br>r0<br>r1",
        "2 runs here:<br>r2<br>r3",
        "2 runs here:<br>r4<br>r5",
    ]
    assert explorer.trajectories.layout.width == "auto"  # its label shown whole
    explorer.select(1)
    assert "also at this point: r0" in explorer.details.value


def test_charts_are_remeasured_when_the_page_says_so():
    """The page reports a chart drawn at another width than its cell through the hidden field
    of fit_charts; the kernel then turns autosize off and on, which makes the view measure."""
    import plotly.graph_objects as go

    from workbench.widgets.charts import fit_charts

    figure, fixed = (
        go.FigureWidget(layout={"autosize": True}),
        go.FigureWidget(layout={"width": 500}),
    )
    sent = []
    figure.layout.on_change(lambda _, value: sent.append(value), "autosize")
    fitter = fit_charts([figure, fixed])
    field, script = fitter.children
    assert fitter.layout.display == "none" and "onerror" in script.value
    field.value = "1"
    assert sent == [False, True] and figure.layout.autosize
    assert fixed.layout.autosize is None  # a figure with a width of its own is left alone
