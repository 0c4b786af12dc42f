"""RunCompare: two or more runs side by side (spec diff, overlaid curves, sample completions).

What it shows comes from plain functions in :mod:`workbench.widgets.run_compare_logic` (the diff,
the alignment of samples by prompt, which curves) and :func:`workbench.fronts.plots.curves_figure`
(one figure per metric); this module only lays them out. The figures are ``FigureWidget``s
updated in place by :meth:`RunCompare.refresh`, so a comparison of running runs can be
re-read without flicker.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as w
import plotly.graph_objects as go

from workbench import tracking
from workbench.fronts import plots
from workbench.spec import mlflow_names
from workbench.spec.mlflow_names import KIND_RUN, TAG_KIND
from workbench.widgets import run_compare_logic as comparison

MARK_STYLE = "background:#fff3b0"  # a cell that differs from the first run's
_CELL = "padding:2px 8px;vertical-align:top;text-align:left"


class RunCompare(w.VBox):
    """Runs side by side: ``runs`` is a list of run ids, or an experiment's name (its
    finished runs; ``parent_run_id`` keeps one sweep's).

    - :attr:`spec_html`: the spec params that differ, one row each; cells that differ from
      the first run's value are highlighted (:attr:`diff` holds the data).
    - :attr:`figures`: one ``FigureWidget`` per metric (``train/loss``, each ``train/*``
      term, each ``objective/*`` across evaluations), one line per run.
    - :attr:`samples_html`: each run's completions at its last evaluation, one row per
      prompt (:attr:`samples` holds the aligned rows); completions that differ from the
      first run's are highlighted.
    """

    def __init__(
        self,
        runs: str | Sequence[str],
        *,
        uri: str | None = None,
        parent_run_id: str | None = None,
        prefixes: Sequence[str] = comparison.CURVE_PREFIXES,
    ):
        if isinstance(runs, str):
            self.experiment, self.run_ids = runs, None
        else:
            self.experiment, self.run_ids = None, list(runs)
            if len(self.run_ids) < 2:
                raise ValueError(
                    f"RunCompare compares two or more runs; got {len(self.run_ids)} run id(s)"
                )
        self.uri, self.parent_run_id, self.prefixes = uri, parent_run_id, tuple(prefixes)
        self.runs: list[dict] = []
        self.labels: list[str] = []
        self.diff: comparison.SpecDiff | None = None
        self.samples: list[comparison.AlignedSample] = []
        self.figures: dict[str, go.FigureWidget] = {}
        self.summary = w.HTML()
        self.spec_html = w.HTML()
        self.figures_box = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap"))
        self.samples_html = w.HTML()
        self.reload_button = w.Button(description="Reload runs", icon="refresh")
        self.reload_button.on_click(lambda _: self.refresh())
        super().__init__(
            [
                w.HBox([self.reload_button, self.summary]),
                w.HTML("<b>Spec differences</b>"),
                self.spec_html,
                w.HTML("<b>Curves</b>"),
                self.figures_box,
                w.HTML("<b>Sample completions</b> (last evaluation, by prompt)"),
                self.samples_html,
            ]
        )
        self.refresh()

    # -- data ------------------------------------------------------------------------------

    def _load(self, client) -> list[dict]:
        if self.run_ids is not None:
            return [comparison.run_dict(client, run_id) for run_id in self.run_ids]
        runs = tracking.runs_frame(client, self.experiment, parent_run_id=self.parent_run_id)
        return [r for r in runs if r["tags"].get(TAG_KIND, KIND_RUN) == KIND_RUN]

    def refresh(self) -> None:
        """Re-read the runs from the store; update the diff, the curves and the samples."""
        client = tracking.connect(self.uri)
        self.runs = self._load(client)
        if len(self.runs) < 2:
            self.summary.value = (
                f"{len(self.runs)} finished run(s) in "
                f"'{html.escape(str(self.experiment))}'; two are needed to compare"
            )
            return
        self.labels = comparison.run_labels(self.runs)
        self.diff = comparison.spec_diff([r["params"] for r in self.runs], self.labels)
        self.spec_html.value = self._diff_html(self.diff)
        self._draw_curves(client)
        self.samples = comparison.align_samples(
            {
                label: comparison.last_samples(client, r["run_id"])
                for label, r in zip(self.labels, self.runs)
            }
        )
        self.samples_html.value = self._samples_html(self.samples)
        self.summary.value = (
            f"{len(self.runs)} runs: {len(self.diff.keys)} spec param(s) differ, "
            f"{self.diff.same} the same; {len(self.figures)} curve(s); "
            f"{len(self.samples)} prompt(s) with samples"
        )

    def _draw_curves(self, client) -> None:
        for key in comparison.curve_keys(self.runs, self.prefixes):
            curves = {
                label: tracking.metric_history(client, r["run_id"], key)
                if key in r["metrics"]
                else []
                for label, r in zip(self.labels, self.runs)
            }
            built = plots.curves_figure(curves, key)
            if key.startswith(mlflow_names.OBJECTIVE_PREFIX):  # a few evaluations: show each one
                built.update_traces(mode="lines+markers")
            figure = self.figures.get(key)
            if figure is None:
                figure = self.figures[key] = go.FigureWidget(built)
                figure.update_layout(
                    height=300, width=460, margin={"t": 40, "b": 40, "l": 50, "r": 10}
                )
                self.figures_box.children = (*self.figures_box.children, figure)
                continue
            with figure.batch_update():  # in place: same traces, new points
                if [t.name for t in figure.data] == [t.name for t in built.data]:
                    for old, new in zip(figure.data, built.data):
                        old.x, old.y = new.x, new.y
                else:
                    figure.data = ()
                    for trace in built.data:
                        figure.add_trace(trace)

    # -- rendering -------------------------------------------------------------------------

    def _header(self, first: str) -> str:
        labels = [
            f"{html.escape(label)}" + (" <i>(baseline)</i>" if i == 0 else "")
            for i, label in enumerate(self.labels)
        ]
        return "<tr>" + "".join(f"<th style='{_CELL}'>{c}</th>" for c in [first, *labels]) + "</tr>"

    def _diff_html(self, diff: comparison.SpecDiff) -> str:
        if not diff.keys:
            return f"<i>the specs are the same ({diff.same} params)</i>"
        rows = []
        for key, values, marked in zip(diff.keys, diff.values, diff.marked):
            cells = "".join(
                f"<td style='{_CELL};{MARK_STYLE if m else ''}' "
                f"class='{'differs' if m else 'same'}'>"
                f"{'<i>(none)</i>' if v is None else html.escape(v)}</td>"
                for v, m in zip(values, marked)
            )
            rows.append(f"<tr><td style='{_CELL}'><code>{html.escape(key)}</code></td>{cells}</tr>")
        return (
            f"<table>{self._header('param')}{''.join(rows)}</table>"
            f"<span style='color:#666;font-size:85%'>{diff.same} other params are the same</span>"
        )

    def _samples_html(self, samples: list[comparison.AlignedSample]) -> str:
        if not samples:
            return "<i>no sample completions logged</i>"
        rows = []
        for s in samples:
            first = s.completions[self.labels[0]]
            cells = []
            for label in self.labels:
                text, scores = s.completions[label], s.scores[label]
                mark = text != first
                score = (
                    (
                        " <span style='color:#666;font-size:85%'>"
                        + ", ".join(f"{html.escape(k)} {v:.3g}" for k, v in scores.items())
                        + "</span>"
                    )
                    if scores
                    else ""
                )
                body = (
                    "<i>(none)</i>" if text is None else f"<code>{html.escape(text)}</code>{score}"
                )
                cells.append(
                    f"<td style='{_CELL};{MARK_STYLE if mark else ''}' "
                    f"class='{'differs' if mark else 'same'}'>{body}</td>"
                )
            target = (
                ""
                if s.target is None
                else (
                    f"<br><span style='color:#666'>target "
                    f"<code>{html.escape(str(s.target))}</code></span>"
                )
            )
            rows.append(
                f"<tr><td style='{_CELL}'><code>{html.escape(s.prompt)}</code>{target}</td>"
                f"{''.join(cells)}</tr>"
            )
        return f"<table>{self._header('prompt')}{''.join(rows)}</table>"
