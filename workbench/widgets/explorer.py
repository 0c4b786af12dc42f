"""ParetoExplorer: the front of an experiment's finished runs, re-ranked by preference weights.

The front comes from :func:`workbench.fronts.finished_runs.front_from_runs` (the function every view
uses) and the figure from :func:`workbench.fronts.plots.front_figure`; the re-ranking and the
marks on front points no weighted sum can reach come from :mod:`workbench.fronts.pareto`. The
sliders here are *preference* weights over finished runs, not training weights.
"""

from __future__ import annotations

import html

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from workbench import tracking
from workbench.fronts import comparison as front_comparison
from workbench.fronts import finished_runs as fronts
from workbench.fronts import pareto, plots
from workbench.spec import mlflow_names
from workbench.spec.mlflow_names import KIND_RUN, TAG_KIND
from workbench.tracking import run_listing
from workbench.widgets import readable
from workbench.widgets import run_compare_logic as comparison
from workbench.widgets.charts import fit_charts
from workbench.widgets.run_compare_logic import download_text, last_samples

PREFERRED = "preferred run"
UNREACHABLE = "no weighted sum reaches"
TRAJECTORY = "trajectory"  # the legend group of the runs' paths through objective space
OVERLAY = "overlay"  # the legend group of other builders' fronts drawn over this one
PARALLEL = "parallel coordinates"  # the view of three or more objectives as one line per run
ALL_AXES = ()  # the axes choice "every objective" (a scatter matrix beyond two)
_TOP = 5

__all__ = [
    "ALL_AXES",
    "OVERLAY",
    "PARALLEL",
    "PREFERRED",
    "TRAJECTORY",
    "UNREACHABLE",
    "ParetoExplorer",
    "last_samples",
]


class ParetoExplorer(w.VBox):
    """The front of ``experiment`` (or of one sweep: ``parent_run_id``) over objectives
    ``names`` (default: those every run has; ``cost:<name>`` puts a cost every run records on
    an axis, e.g. ``names=["exact_match", "cost:trainable_params"]``). Dominated runs are grey;
    the hypervolume is in the title. Preference-weight sliders re-rank the runs under a
    weighted sum or Chebyshev; front points no weighted sum can reach are circled. Clicking a
    point (or :meth:`select`) shows its run's spec, metrics and sample completions.

    With more than two objectives, :attr:`axes` picks two of them (``axes=("a", "b")`` at the
    start): the front, the sliders and the ranking are then those of that plane, built by the
    same :func:`~workbench.fronts.finished_runs.front_from_runs`; :data:`ALL_AXES` shows them
    all (a scatter matrix). In a plane, :attr:`trajectories` draws each run's path through it
    across its evaluations (:func:`~workbench.fronts.finished_runs.objective_trajectory`, read
    from the store when first drawn; off by default). ``overlays={label: parent_run_id}`` draws
    other builders' fronts (a conditioned model's, a merge grid's, a search's children) over
    this one in each plane, each as its own staircase with its hypervolume."""

    def __init__(
        self,
        experiment: str,
        *,
        uri: str | None = None,
        names: list[str] | None = None,
        parent_run_id: str | None = None,
        scalarisation: str = "weighted_sum",
        axes: tuple[str, str] | None = None,
        trajectories: bool = False,
        overlays: dict[str, str] | None = None,
    ):
        self.experiment, self.uri, self.parent_run_id = experiment, uri, parent_run_id
        self.overlays = dict(overlays or {})  # label -> parent run id of another builder's runs
        self._overlay_runs: dict[str, list[dict]] = {}
        self._names = names
        self._wanted_axes = tuple(axes) if axes else ALL_AXES
        self._all_runs: list[dict] = []
        self._paths: dict[str, list] = {}  # run id -> objective_trajectory over self.objectives
        self._syncing = False
        self.objectives: list[str] = []
        self.front = None
        self.figure = go.FigureWidget()
        self.figure.update_layout(height=420, template="plotly_white")
        self.summary = w.HTML()
        self.ranking_html = w.HTML()
        self.details = w.HTML()
        self.scalarisation = w.ToggleButtons(
            options=[("weighted sum", "weighted_sum"), ("Chebyshev", "chebyshev")],
            value=scalarisation,
            description="rank by",
        )
        self.axes = w.Dropdown(
            options=[("every objective", ALL_AXES)],
            value=ALL_AXES,
            description="axes",
            layout=w.Layout(display="none"),
        )
        self.view = w.ToggleButtons(
            options=[("scatter", "scatter"), (PARALLEL, "parallel")],
            value="scatter",
            description="view",
            layout=w.Layout(display="none"),
        )
        self.trajectories = w.Checkbox(
            value=trajectories,
            indent=False,
            description="each run's trajectory across its evaluations",
            layout=w.Layout(width="auto"),  # its label in full, never cut to the default width
        )
        self.reload_button = w.Button(description="Reload runs", icon="refresh")
        self.reload_button.on_click(lambda _: self.refresh())
        self.sliders_box = w.VBox()
        self.sliders: list[w.FloatSlider] = []
        self.scalarisation.observe(lambda _: self.rerank(), "value")
        self.axes.observe(self._axes_changed, "value")
        self.trajectories.observe(lambda _: self._draw(), "value")
        self.view.observe(lambda _: self._draw(), "value")
        super().__init__(
            [
                w.HBox([self.reload_button, self.summary]),
                w.HBox(
                    [self.axes, self.view, self.trajectories],
                    layout=w.Layout(flex_flow="row wrap"),
                ),
                self.figure,
                fit_charts([self.figure]),
                w.HTML(
                    "<b>Preference weights</b> (how much each objective matters to "
                    "you; applied to finished runs, after training)"
                ),
                self.sliders_box,
                self.scalarisation,
                self.ranking_html,
                self.details,
            ]
        )
        self.refresh()

    # -- data ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the finished runs from the store, rebuild the front and the figure."""
        # A local sqlite store is read without MLflow (its SQLAlchemy store takes seconds to
        # open and to turn a thousand runs into objects); any other through MLflow's client.
        # One read serves this front and every overlaid builder's.
        finished = run_listing.finished_run_records(
            run_listing.open_store(self.uri), self.experiment
        )
        runs = run_listing.children(finished, self.parent_run_id)
        if any(name.startswith("cost:") for name in self._names or ()):
            # Costs asked for as axes: every run recorded them, declared or not.
            runs = [fronts.with_cost_axes(r) for r in runs]
        self._all_runs = [
            r for r in runs if r["tags"].get(TAG_KIND, KIND_RUN) == KIND_RUN and r["objectives"]
        ]
        self._overlay_runs = {
            label: [r for r in run_listing.children(finished, parent) if r["objectives"]]
            for label, parent in self.overlays.items()
        }
        self._paths = {}
        if not self._all_runs:
            self.front, self.runs = None, []
            self.summary.value = f"no finished runs in '{html.escape(self.experiment)}' yet"
            return
        front = fronts.front_from_runs(self._all_runs, self._names)
        self.objectives = list(front.names)
        self._sync_axes()
        self._show(front if self.axes.value == ALL_AXES else None)

    def _sync_axes(self) -> None:
        """Offer every pair of objectives (beyond two); keep the choice while it still exists."""
        names = self.objectives
        pairs = (
            [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] if len(names) > 2 else []
        )
        wanted = self.axes.value if self.axes.value != ALL_AXES else self._wanted_axes
        if wanted and tuple(reversed(wanted)) in pairs:
            wanted = tuple(reversed(wanted))
        options = [(f"every objective ({len(names)})", ALL_AXES)] + [
            (f"{a} vs {b}", (a, b)) for a, b in pairs
        ]
        self._syncing = True
        try:
            self.axes.options = options
            self.axes.value = wanted if wanted in pairs else ALL_AXES
        finally:
            self._syncing = False
        self.axes.layout.display = None if pairs else "none"

    def _axes_changed(self, _change) -> None:
        if not self._syncing and self._all_runs:
            self._show()

    def _show(self, front=None) -> None:
        """Show ``front`` (default: the one over the chosen axes) with its sliders and marks."""
        if front is None:
            names = list(self.axes.value) if self.axes.value != ALL_AXES else self.objectives
            front = fronts.front_from_runs(self._all_runs, names)
        self.front = front
        # front_from_runs keeps the runs that logged every objective, in order: the rows.
        self.runs = [
            r for r in self._all_runs if all(n in r["objectives"] for n in self.front.names)
        ]
        self.unreachable = pareto.weighted_sum_unreachable(self.front.points, self.front.directions)
        names = list(self.front.names)
        if [s.description for s in self.sliders] != names:
            self.sliders = [
                w.FloatSlider(
                    value=round(1.0 / len(names), 2),
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    description=n,
                    readout_format=".2f",
                    style={"description_width": readable.label_width(names)},
                    layout=w.Layout(width="auto", min_width="360px"),
                )
                for n in names
            ]
            for slider in self.sliders:
                slider.observe(lambda _: self.rerank(), "value")
            self.sliders_box.children = tuple(self.sliders)
        self.trajectories.disabled = len(names) != 2
        self.view.layout.display = None if len(names) > 2 else "none"
        n_unreachable = int(self.unreachable.sum())
        authors = {r["tags"].get(mlflow_names.TAG_AUTHOR) for r in self.runs} - {None}
        by = f" by {len(authors)} authors" if authors else ""
        self.summary.value = (
            f"{len(self.runs)} runs{by}, {int(self.front.mask.sum())} on the front, "
            f"hypervolume {self.front.hypervolume:.4g}; {n_unreachable} front "
            f"point(s) no weighted sum can reach (circled)"
        )
        self._draw()

    def _draw(self) -> None:
        """Rebuild the figure from :attr:`front`: the front's traces, the trajectories (when
        on, under the marks), the unreachable and preferred marks."""
        if self.front is None:
            return
        if self._parallel():
            self._draw_parallel()
            return
        figure = plots.front_figure(self.front)
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout.annotations = ()
            self.figure.layout.shapes = ()
            for trace in figure.data:
                self.figure.add_trace(trace)
            self.figure.update_layout(
                title_text=figure.layout.title.text,
                xaxis=figure.layout.xaxis,
                yaxis=figure.layout.yaxis,
            )
            if self.trajectories.value and len(self.front.names) == 2:
                for trace in self._trajectory_traces():
                    self.figure.add_trace(trace)
            for trace in self._overlay_traces():
                self.figure.add_trace(trace)
            self._add_mark(
                UNREACHABLE,
                np.flatnonzero(self.unreachable),
                {"symbol": "circle-open", "size": 18, "color": "#1f77b4", "line": {"width": 2}},
            )
            self._add_mark(
                PREFERRED,
                np.array([], dtype=int),
                {"symbol": "star", "size": 20, "color": "#ff7f0e", "line": {"width": 1}},
            )
        for trace in self.figure.data:
            if trace.customdata is not None:
                trace.on_click(self._clicked)
        self.rerank()

    def _trajectory_traces(self) -> list:
        """One path per run (row) through the plane of the front's two objectives; a click on
        any of its points selects the run."""
        client = None
        for run in self.runs:
            if run["run_id"] not in self._paths:
                client = client or tracking.connect(self.uri)
                self._paths[run["run_id"]] = fronts.objective_trajectory(
                    client, run["run_id"], self.objectives
                )
        labels = comparison.run_labels(self.runs)
        figure = plots.trajectory_figure(
            {label: self._paths[r["run_id"]] for label, r in zip(labels, self.runs)},
            list(self.front.names),
            list(self.front.directions),
        )
        rows = {label: i for i, label in enumerate(labels)}
        for trace in figure.data:
            trace.update(
                legendgroup=TRAJECTORY,
                legendgrouptitle_text="trajectories",
                opacity=0.6,
                line={"width": 1},
                customdata=[rows[trace.name]] * len(trace.x),
                showlegend=len(self.runs) <= 12,
            )
        return list(figure.data)

    def _parallel(self) -> bool:
        return self.view.value == "parallel" and len(self.front.names) > 2

    def _draw_parallel(self) -> None:
        """One line per run across every objective's axis (each axis oriented so that up is
        better), coloured by the run's rank under the current preferences (dark: preferred)."""
        titles = [plots.axis_title(n, d) for n, d in zip(self.front.names, self.front.directions)]
        dimensions = []
        for j, (title, direction) in enumerate(zip(titles, self.front.directions)):
            values = self.front.points[:, j]
            low, high = float(values.min()), float(values.max())
            dimensions.append(
                {
                    "label": title,
                    "values": values,
                    "range": [high, low] if direction == "min" else [low, high],
                }
            )
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout.annotations = ()
            self.figure.layout.shapes = ()
            self.figure.add_trace(
                go.Parcoords(
                    name=PARALLEL,
                    dimensions=dimensions,
                    line={
                        "color": np.zeros(len(self.front.labels)),
                        "colorscale": "Viridis",
                        "showscale": True,
                        "colorbar": {"title": {"text": "rank"}},
                    },
                )
            )
            self.figure.update_layout(
                title_text=f"{len(self.front.labels)} runs across {len(titles)} objectives "
                "(up is better; colour: rank under your preferences)"
            )
        self.rerank()

    def _overlay_traces(self) -> list:
        """In a plane, each overlaid builder's front as its own staircase (legend group
        :data:`OVERLAY`); runs of it missing the plane's objectives are left out."""
        if len(self.front.names) != 2:
            return []
        fronts_by_label = {}
        for label, runs in self._overlay_runs.items():
            kept = [r for r in runs if all(n in r["objectives"] for n in self.front.names)]
            if kept:
                fronts_by_label[label] = fronts.front_from_runs(kept, list(self.front.names))
        if not fronts_by_label:
            return []
        traces = list(front_comparison.fronts_figure(fronts_by_label).data)
        for trace in traces:
            trace.update(legendgroup=OVERLAY, legendgrouptitle_text="other builders", opacity=0.8)
        return traces

    def _add_mark(self, name: str, rows: np.ndarray, marker: dict) -> None:
        k = len(self.front.names)
        labels = [self.front.labels[i] for i in rows]
        if k <= 2:
            self.figure.add_scatter(
                **self._plane_xy(rows),
                mode="markers",
                marker=marker,
                name=name,
                hovertext=labels,
                customdata=rows,
                hovertemplate="%{hovertext}<extra>" + name + "</extra>",
            )
        else:
            titles = [
                plots.axis_title(n, d) for n, d in zip(self.front.names, self.front.directions)
            ]
            self.figure.add_trace(
                go.Splom(
                    dimensions=[
                        {"label": t, "values": self.front.points[rows, j]}
                        for j, t in enumerate(titles)
                    ],
                    marker=marker,
                    name=name,
                    hovertext=labels,
                    customdata=rows,
                    showupperhalf=False,
                    diagonal_visible=False,
                )
            )

    def _plane_xy(self, rows: np.ndarray) -> dict:
        """Where rows sit in a 2-D figure: their two objectives, or with one objective its
        value against the run's label (as :func:`~workbench.fronts.plots.front_figure` draws it)."""
        points = self.front.points
        if len(self.front.names) == 1:
            return {"x": points[rows, 0], "y": [self.front.labels[i] for i in rows]}
        return {"x": points[rows, 0], "y": points[rows, 1]}

    # -- preferences -----------------------------------------------------------------------

    @property
    def weights(self) -> list[float]:
        return [s.value for s in self.sliders]

    def ranking(self) -> np.ndarray:
        """Row indices (into :attr:`runs`) from best to worst under the current preferences."""
        weights = self.weights
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        return pareto.preference_ranking(
            self.front.points, self.front.directions, weights, self.scalarisation.value
        )

    def rerank(self) -> None:
        if self.front is None:
            return
        order = self.ranking()
        best = order[:1]
        if self._parallel():
            ranks = np.empty(len(order))
            ranks[order] = np.arange(len(order))
            next(t for t in self.figure.data if t.name == PARALLEL).line.color = ranks
        else:
            mark = next(t for t in self.figure.data if t.name == PREFERRED)
            with self.figure.batch_update():
                if len(self.front.names) <= 2:
                    mark.update(self._plane_xy(best))
                else:
                    mark.dimensions = [
                        dict(d.to_plotly_json(), values=self.front.points[best, j])
                        for j, d in enumerate(mark.dimensions)
                    ]
                mark.customdata, mark.hovertext = best, [self.front.labels[i] for i in best]
        cells = "".join(f"<th>{html.escape(n)}</th>" for n in self.front.names)
        rows = []
        for rank, i in enumerate(order[:_TOP], 1):
            flag = ("front" if self.front.mask[i] else "dominated") + (
                ", unreachable by a weighted sum" if self.unreachable[i] else ""
            )
            values = "".join(f"<td>{v:.4g}</td>" for v in self.front.points[i])
            rows.append(
                f"<tr><td>{rank}</td><td>{html.escape(self.front.labels[i])}</td>{values}"
                f"<td>{flag}</td></tr>"
            )
        self.ranking_html.value = (
            f"<table><tr><th>#</th><th>run</th>{cells}<th></th></tr>{''.join(rows)}</table>"
        )

    # -- one run ---------------------------------------------------------------------------

    def _clicked(self, trace, points, _state) -> None:
        if points.point_inds:
            self.select(int(trace.customdata[points.point_inds[0]]))

    def select(self, row: int) -> dict:
        """Show run ``row``: what it is first (method, adapter, task, each objective with its
        direction, training weight and value), then its metrics under readable names, then
        its sample completions beside their reference answers with their scores, and its
        full spec folded away. Returns that run's dict."""
        run = self.runs[row]
        client = tracking.connect(self.uri)
        spec = (
            download_text(client, run["run_id"], mlflow_names.SPEC_ARTIFACT)
            or "(no spec.yaml artifact)"
        )
        here = next((g for g in plots.overlap_groups(self.front.points) if row in g), [row])
        others = [self.front.labels[i] for i in here if i != row]
        also = f"<div>also at this point: {html.escape(', '.join(others))}</div>" if others else ""
        samples = last_samples(client, run["run_id"])[:4]
        sampled = last_samples(client, run["run_id"], "training")[:8]
        self.details.value = (
            f"<div style='{_DETAILS_STYLE}'>"
            f"<b>{html.escape(run.get('run_name') or run['run_id'])}</b> "
            f"(<code>{run['run_id']}</code>, "
            f"{'on the front' if self.front.mask[row] else 'dominated'}){also}"
            + summary_html(readable.run_summary(run["params"], run["objectives"]))
            + "<b>metrics</b>"
            + metrics_html(run["metrics"])
            + (f"<b>sample completions</b>{samples_html(samples)}" if samples else "")
            + (
                f"<b>completions sampled in training</b> (the last table logged)"
                f"{samples_html(sampled)}"
                if sampled
                else ""
            )
            + "<details><summary>the full spec (YAML)</summary>"
            f"<pre style='max-height:300px;overflow:auto'>{html.escape(spec)}</pre></details>"
            "</div>"
        )
        return run


_DETAILS_STYLE = "overflow-wrap:anywhere;max-width:100%"
_CELL = "padding:2px 10px 2px 0;text-align:left;vertical-align:top"


def _rows_html(header: list[str], rows: list[list[str]]) -> str:
    """A plain table; cells are HTML already escaped by the caller."""
    head = "".join(f"<th style='{_CELL}'>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_html(summary: readable.RunSummary) -> str:
    """The method (and its settings), adapter and task, then the objectives with their
    direction, training weight and value: what a run is, before any metric."""

    def settings(values: dict[str, str]) -> str:
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())
        return f" <span style='color:#666'>({html.escape(shown)})</span>" if shown else ""

    lines = [
        f"method <b>{html.escape(summary.method)}</b>{settings(summary.method_settings)}",
        f"adapter <b>{html.escape(summary.adapter or '-')}</b>{settings(summary.adapter_settings)}",
        f"task <b>{html.escape(summary.task or '-')}</b>",
    ]
    objectives = [
        [
            html.escape(o.name),
            "higher is better" if o.direction == "max" else "lower is better",
            "measured only" if o.weight is None else f"{o.weight:.3g}",
            "-" if o.value is None else f"{o.value:.4g}",
            f"<span style='color:#666'>{html.escape(o.source)}</span>",
        ]
        for o in summary.objectives
    ]
    table = _rows_html(["objective", "direction", "training weight", "value", "source"], objectives)
    return "<div>" + "<br>".join(lines) + f"</div>{table}"


def metrics_html(metrics: dict[str, float]) -> str:
    """A run's metrics under readable names, objectives first (:func:`readable.metric_rows`)."""
    rows = readable.metric_rows(metrics, readable.DETAIL_PREFIXES)
    return _rows_html(
        ["metric", "value"], [[html.escape(label), html.escape(value)] for _, label, value in rows]
    )


def samples_html(samples: list[dict]) -> str:
    """Samples as prompt, reference answer, completion and score, one row each."""
    rows = [
        [
            f"<code>{html.escape(r.prompt)}</code>",
            "-" if r.reference is None else f"<code>{html.escape(r.reference)}</code>",
            f"<code>{html.escape(r.completion)}</code>",
            html.escape(readable.score_text(r.scores)) or "-",
        ]
        for r in readable.sample_rows(samples)
    ]
    return _rows_html(["prompt", "reference", "completion", "score"], rows)
