"""ParetoExplorer: the front of an experiment's finished runs, re-ranked by preference weights.

The front comes from :func:`workbench.fronts.front_from_runs` (the function every view
uses) and the figure from :func:`workbench.plots.front_figure`; the re-ranking and the
marks on front points no weighted sum can reach come from :mod:`workbench.pareto`. The
sliders here are *preference* weights over finished runs, not training weights.
"""

from __future__ import annotations

import html
import json
import tempfile

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from workbench import fronts, pareto, plots, tracking

PREFERRED = "preferred run"
UNREACHABLE = "no weighted sum reaches"
_TOP = 5


def _download(client, run_id: str, path: str) -> str | None:
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp,
                                                        tracking_uri=client.tracking_uri)
            with open(local, encoding="utf-8") as f:
                return f.read()
    except Exception:  # a run without that artifact (MLflow raises its own types)
        return None


def last_samples(client, run_id: str) -> list[dict]:
    """The sample completions a run logged at its last evaluation ([] if none)."""
    try:
        files = sorted(a.path for a in client.list_artifacts(run_id, "samples"))
    except Exception:  # the store cannot list them
        return []
    text = _download(client, run_id, files[-1]) if files else None
    if not text:
        return []
    data = json.loads(text)
    if isinstance(data, dict) and "columns" in data:  # a table: {"columns": [...], "data": [[...]]}
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    return data if isinstance(data, list) else []


class ParetoExplorer(w.VBox):
    """The front of ``experiment`` (or of one sweep: ``parent_run_id``) over objectives
    ``names`` (default: those every run has). Dominated runs are grey; the hypervolume is
    in the title. Preference-weight sliders re-rank the runs under a weighted sum or
    Chebyshev; front points no weighted sum can reach are circled. Clicking a point (or
    :meth:`select`) shows its run's spec, metrics and sample completions."""

    def __init__(self, experiment: str, *, uri: str | None = None, names: list[str] | None = None,
                 parent_run_id: str | None = None, scalarisation: str = "weighted_sum"):
        self.experiment, self.uri, self.parent_run_id = experiment, uri, parent_run_id
        self._names = names
        self.figure = go.FigureWidget()
        self.figure.update_layout(height=420, template="plotly_white")
        self.summary = w.HTML()
        self.ranking_html = w.HTML()
        self.details = w.HTML()
        self.scalarisation = w.ToggleButtons(options=[("weighted sum", "weighted_sum"),
                                                      ("Chebyshev", "chebyshev")],
                                             value=scalarisation, description="rank by")
        self.reload_button = w.Button(description="Reload runs", icon="refresh")
        self.reload_button.on_click(lambda _: self.refresh())
        self.sliders_box = w.VBox()
        self.sliders: list[w.FloatSlider] = []
        self.scalarisation.observe(lambda _: self.rerank(), "value")
        super().__init__([w.HBox([self.reload_button, self.summary]), self.figure,
                          w.HTML("<b>Preference weights</b> (how much each objective matters to "
                                 "you; applied to finished runs, after training)"),
                          self.sliders_box, self.scalarisation, self.ranking_html, self.details])
        self.refresh()

    # -- data ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the finished runs from the store, rebuild the front and the figure."""
        client = tracking.connect(self.uri)
        runs = tracking.runs_frame(client, self.experiment, parent_run_id=self.parent_run_id)
        runs = [r for r in runs if r["tags"].get("workbench.kind", "run") == "run" and r["objectives"]]
        if not runs:
            self.front, self.runs = None, []
            self.summary.value = f"no finished runs in '{html.escape(self.experiment)}' yet"
            return
        self.front = fronts.front_from_runs(runs, self._names)
        # front_from_runs keeps the runs that logged every objective, in order: the rows.
        self.runs = [r for r in runs if all(n in r["objectives"] for n in self.front.names)]
        self.unreachable = pareto.weighted_sum_unreachable(self.front.points, self.front.directions)
        names = list(self.front.names)
        if [s.description for s in self.sliders] != names:
            self.sliders = [w.FloatSlider(value=round(1.0 / len(names), 2), min=0.0, max=1.0, step=0.05,
                                          description=n, readout_format=".2f") for n in names]
            for slider in self.sliders:
                slider.observe(lambda _: self.rerank(), "value")
            self.sliders_box.children = tuple(self.sliders)
        figure = plots.front_figure(self.front)
        with self.figure.batch_update():
            self.figure.data = ()
            self.figure.layout.annotations = ()
            self.figure.layout.shapes = ()
            for trace in figure.data:
                self.figure.add_trace(trace)
            self.figure.update_layout(title_text=figure.layout.title.text,
                                      xaxis=figure.layout.xaxis, yaxis=figure.layout.yaxis)
            self._add_mark(UNREACHABLE, np.flatnonzero(self.unreachable),
                           {"symbol": "circle-open", "size": 18, "color": "#1f77b4", "line": {"width": 2}})
            self._add_mark(PREFERRED, np.array([], dtype=int),
                           {"symbol": "star", "size": 20, "color": "#ff7f0e", "line": {"width": 1}})
        for trace in self.figure.data:
            if trace.customdata is not None:
                trace.on_click(self._clicked)
        n_unreachable = int(self.unreachable.sum())
        self.summary.value = (f"{len(self.runs)} runs, {int(self.front.mask.sum())} on the front, "
                              f"hypervolume {self.front.hypervolume:.4g}; {n_unreachable} front "
                              f"point(s) no weighted sum can reach (circled)")
        self.rerank()

    def _add_mark(self, name: str, rows: np.ndarray, marker: dict) -> None:
        k = len(self.front.names)
        labels = [self.front.labels[i] for i in rows]
        if k == 2:
            self.figure.add_scatter(x=self.front.points[rows, 0], y=self.front.points[rows, 1], mode="markers",
                                    marker=marker, name=name, hovertext=labels, customdata=rows,
                                    hovertemplate="%{hovertext}<extra>" + name + "</extra>")
        elif k > 2:
            titles = [plots.axis_title(n, d) for n, d in zip(self.front.names, self.front.directions)]
            self.figure.add_trace(go.Splom(
                dimensions=[{"label": t, "values": self.front.points[rows, j]} for j, t in enumerate(titles)],
                marker=marker, name=name, hovertext=labels, customdata=rows,
                showupperhalf=False, diagonal_visible=False))

    # -- preferences -----------------------------------------------------------------------

    @property
    def weights(self) -> list[float]:
        return [s.value for s in self.sliders]

    def ranking(self) -> np.ndarray:
        """Row indices (into :attr:`runs`) from best to worst under the current preferences."""
        weights = self.weights
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        return pareto.preference_ranking(self.front.points, self.front.directions, weights,
                                         self.scalarisation.value)

    def rerank(self) -> None:
        if self.front is None:
            return
        order = self.ranking()
        best = order[:1]
        mark = next(t for t in self.figure.data if t.name == PREFERRED)
        with self.figure.batch_update():
            if len(self.front.names) == 2:
                mark.x, mark.y = self.front.points[best, 0], self.front.points[best, 1]
            elif len(self.front.names) > 2:
                mark.dimensions = [dict(d, values=self.front.points[best, j])
                                   for j, d in enumerate(mark.dimensions)]
            mark.customdata, mark.hovertext = best, [self.front.labels[i] for i in best]
        cells = "".join(f"<th>{html.escape(n)}</th>" for n in self.front.names)
        rows = []
        for rank, i in enumerate(order[:_TOP], 1):
            flag = ("front" if self.front.mask[i] else "dominated") + (", unreachable by a weighted sum"
                                                                        if self.unreachable[i] else "")
            values = "".join(f"<td>{v:.4g}</td>" for v in self.front.points[i])
            rows.append(f"<tr><td>{rank}</td><td>{html.escape(self.front.labels[i])}</td>{values}"
                        f"<td>{flag}</td></tr>")
        self.ranking_html.value = (f"<table><tr><th>#</th><th>run</th>{cells}<th></th></tr>"
                                   f"{''.join(rows)}</table>")

    # -- one run ---------------------------------------------------------------------------

    def _clicked(self, trace, points, _state) -> None:
        if points.point_inds:
            self.select(int(trace.customdata[points.point_inds[0]]))

    def select(self, row: int) -> dict:
        """Show run ``row``'s spec, metrics and sample completions; returns that run's dict."""
        run = self.runs[row]
        client = tracking.connect(self.uri)
        spec = _download(client, run["run_id"], tracking.SPEC_ARTIFACT) or "(no spec.yaml artifact)"
        metrics = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.5g}</td></tr>"
                          for k, v in sorted(run["metrics"].items())
                          if k.startswith(("objective/", "cost/", "perf/", "train/loss", "reward/")))
        samples = last_samples(client, run["run_id"])[:4]
        sample_rows = "".join(
            f"<tr><td><code>{html.escape(str(s.get('prompt', '')))}</code></td>"
            f"<td><code>{html.escape(str(s.get('completion', s.get('generated', ''))))}</code></td></tr>"
            for s in samples)
        self.details.value = (
            f"<b>{html.escape(run.get('run_name') or run['run_id'])}</b> "
            f"(<code>{run['run_id']}</code>, {'on the front' if self.front.mask[row] else 'dominated'})"
            f"<div style='display:flex;gap:24px'><pre style='max-height:300px;overflow:auto'>"
            f"{html.escape(spec)}</pre><table>{metrics}</table></div>"
            + (f"<b>sample completions</b><table>{sample_rows}</table>" if sample_rows else ""))
        return run
