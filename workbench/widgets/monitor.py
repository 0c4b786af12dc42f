"""RunMonitor: background runs with a progress bar each, live curves and a Stop button.

Runs are launched with :func:`workbench.launch` and studies with
:func:`workbench.studies.launch.launch_sweep` / ``launch_search`` (their own processes:
closing the notebook tab or restarting the kernel never stops them) and watched through
MLflow only, so a new
monitor on the same experiment re-attaches to its running runs. :meth:`RunMonitor.refresh`
reads the store once and updates the bars and the curves in place; a daemon thread calls it
every ``poll_s`` seconds while some run is alive.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as w
import plotly.graph_objects as go

from workbench import tracking
from workbench.fronts import plots
from workbench.running.launcher import TERMINAL, RunHandle, attach, launch
from workbench.spec.mlflow_names import (
    LOSS_KEY,
    LR_KEY,
    OBJECTIVE_PREFIX,
    PID_TAG,
    REWARD_PREFIX,
    TRAIN_PREFIX,
)
from workbench.spec.run_spec import RunSpec
from workbench.studies import launch as studies
from workbench.tracking import run_listing
from workbench.widgets.charts import fit_charts
from workbench.widgets.readable import metric_label

# Metrics drawn live, one small panel each: the loss, its terms and the learning rate on one
# figure; objectives and rewards at each evaluation on another.
VALUE_PREFIXES = (OBJECTIVE_PREFIX, REWARD_PREFIX)
LOSS_TITLE = "training loss, its terms and the learning rate"
OBJECTIVES_TITLE = "objectives at each evaluation"
_BAR_STYLE = {"FINISHED": "success", "FAILED": "danger", "KILLED": "warning"}


def run_curves(
    client, run_id: str, prefixes: tuple[str, ...]
) -> dict[str, list[tuple[int, float]]]:
    """``{metric key: [(step, value), ...]}`` of a run's metrics under ``prefixes``."""
    keys = sorted(k for k in client.get_run(run_id).data.metrics if k.startswith(prefixes))
    return {key: tracking.metric_history(client, run_id, key) for key in keys}


def panel_order(keys) -> list[str]:
    """The order of a figure's panels: the training loss first, the learning rate last (its
    scale is nothing like a loss's, so it gets a panel of its own), objectives before
    rewards, then by name."""

    def rank(key: str) -> tuple[int, str]:
        if key == LOSS_KEY:
            return 0, key
        if key == LR_KEY:
            return 3, key
        return (1 if key.startswith((TRAIN_PREFIX, OBJECTIVE_PREFIX)) else 2), key

    return sorted(set(keys), key=rank)


def draw_run_curves(
    figure: go.Figure,
    label: str,
    group: str,
    color: str,
    curves: dict[str, list[tuple[int, float]]],
) -> None:
    """Draw one run's ``curves`` (``{metric key: [(step, value), ...]}``) into ``figure``, a
    figure of small multiples with one panel per metric, or update the run's lines in place.

    The run's lines share one colour and one legend group (``group``, its run id): the legend
    has one entry per run, ``label``, and clicking it hides the run's lines in every panel.
    Each line's ``meta`` is its metric key. A metric seen for the first time adds a panel
    (:func:`panel_order`; layout by :func:`workbench.fronts.plots.panels_layout`)."""
    curves = {k: v for k, v in curves.items() if v}
    shown = {(t.legendgroup, t.meta): t for t in figure.data}
    panels = panel_order({t.meta for t in figure.data} | set(curves))
    titles = [metric_label(k) for k in panels]
    # Layout changes go as messages of their own, never inside a batch with new traces: a
    # FigureWidget's view dropped annotations and axis ranges sent in one batch with them.
    if [a.text for a in figure.layout.annotations] != [f"<b>{t}</b>" for t in titles]:
        layout = plots.panels_layout(titles, title=figure.layout.title.text)
        annotations = layout.pop("annotations")
        figure.update_layout(layout)
        figure.layout.annotations = annotations  # after the axes they refer to exist
        with figure.batch_update():
            for trace in figure.data:
                xaxis, yaxis = plots.panel_axes(panels.index(trace.meta))
                trace.update(xaxis=xaxis, yaxis=yaxis)
    in_legend = any(t.legendgroup == group and t.showlegend is not False for t in figure.data)
    with figure.batch_update():
        for key in panels:
            trace = shown.get((group, key))
            if key in curves and trace is not None:
                x, y = [p[0] for p in curves[key]], [p[1] for p in curves[key]]
                trace.update(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines")
    for key in panels:
        if key not in curves or (group, key) in shown:
            continue
        x, y = [p[0] for p in curves[key]], [p[1] for p in curves[key]]
        xaxis, yaxis = plots.panel_axes(panels.index(key))
        figure.add_scatter(
            x=x,
            y=y,
            name=label,
            legendgroup=group,
            meta=key,
            showlegend=not in_legend,
            xaxis=xaxis,
            yaxis=yaxis,
            mode="lines+markers" if len(x) < 30 else "lines",
            line={"color": color, "width": 2},
            marker={"color": color, "size": 5},
            hovertemplate=f"{label}<br>{metric_label(key)}<br>"
            "step %{x}: %{y:.4g}<extra></extra>",
        )
        in_legend = True
    ranges = {}
    for i, key in enumerate(panels):  # a flat line sits mid-panel, at its own value
        values = [v for t in figure.data if t.meta == key for v in (t.y or ())]
        axis = plots.panel_axes(i)[1].replace("y", "yaxis", 1)
        flat = plots.flat_range(values)
        old = figure.layout[axis].range
        if (None if old is None else list(old)) != flat:
            ranges[axis] = {"range": flat, "autorange": flat is None}
        if key == LR_KEY and figure.layout[axis].tickformat != ".2~e":
            ranges.setdefault(axis, {})["tickformat"] = ".2~e"  # 3e-4, as rates are written
    if ranges:
        figure.update_layout(ranges)


def empty_panels(title: str) -> go.FigureWidget:
    """A figure of small multiples with no run yet (its panels come with the first curves)."""
    figure = go.FigureWidget(layout=plots.panels_layout([], title=title))
    figure.update_layout(height=180)
    return figure


def running_runs(client, experiment: str) -> list[str]:
    """Ids of the runs of ``experiment`` still RUNNING that a process trains (launched runs)."""
    runs = tracking.runs_frame(client, experiment, status="RUNNING")
    return [r["run_id"] for r in runs if PID_TAG in r["tags"]]


def runs_started_since(client, experiment: str, since_ms: int) -> list[str]:
    """Ids of the runs of ``experiment`` a process trained or trains (a study's children) that
    started at ``since_ms`` or later, whatever their status now: a short run can start and end
    between two looks, and it is still one of the study's runs."""
    runs = tracking.runs_frame(client, experiment, status=None)
    return [
        r["run_id"] for r in runs if PID_TAG in r["tags"] and (r["start_time"] or 0) >= since_ms
    ]


def progress_text(progress: run_listing.RunProgress) -> str:
    row = progress.row
    if progress.phase:  # before its first step: what it does meanwhile (building its base)
        return f"{row.status.lower()}, preparing: {progress.phase}"
    text = f"{row.status.lower()}, step {row.step_of_total or '0/?'}"
    if progress.last_loss is not None:
        text += f", loss {progress.last_loss:.4g}"
    if row.status == "RUNNING":
        text += f", ETA {run_listing.format_duration(progress.eta_s)}"
    elif progress.error:
        text += f": {progress.error}"
    return text


@dataclass
class _RunRow:
    handle: RunHandle
    name: str  # its label in the charts' legends (the MLflow run name; unique among the rows)
    color: str
    bar: w.IntProgress
    label: w.HTML
    stop: w.Button
    status: str = "RUNNING"

    @property
    def box(self) -> w.HBox:
        return w.HBox(
            [
                w.HTML(
                    f"<span style='color:{self.color}'>&#9632;</span> "
                    f"<code style='overflow-wrap:anywhere'>{html.escape(self.name)}</code>",
                    layout=w.Layout(width="220px", min_width="220px"),
                ),
                self.bar,
                self.label,
                self.stop,
            ]
        )


class RunMonitor(w.VBox):
    """Launch specs as background runs and watch them: ``launch(spec)``, ``launch_sweep(spec,
    points)``, ``launch_search(config, trials)``, ``refresh()``, ``stop(run_id)``. With
    ``experiment``, the experiment's running runs are attached at once.
    With ``builder`` (an :class:`~workbench.widgets.ExperimentBuilder`), a Launch button
    launches its current spec. ``poll_s=None`` leaves refreshing to the caller."""

    def __init__(
        self,
        experiment: str | None = None,
        *,
        builder=None,
        uri: str | None = None,
        poll_s: float | None = 2.0,
        threads: int | None = None,
    ):
        self.uri, self.poll_s, self.threads = uri, poll_s, threads
        self.builder = builder
        self.rows: dict[str, _RunRow] = {}
        self.studies: list[studies.StudyHandle] = []
        self.message = w.HTML()
        self.launch_button = w.Button(description="Launch", icon="play", button_style="primary")
        self.launch_button.on_click(lambda _: self._launch_from_builder())
        self.loss_figure = empty_panels(LOSS_TITLE)
        self.objective_figure = empty_panels(OBJECTIVES_TITLE)
        self.rows_box = w.VBox()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        top = [self.launch_button] if builder is not None else []
        super().__init__(
            [
                *top,
                self.message,
                self.rows_box,
                self.loss_figure,
                self.objective_figure,
                fit_charts([self.loss_figure, self.objective_figure]),
            ]
        )
        if experiment is not None:
            self.attach_running(experiment)

    def _client(self):
        return tracking.connect(self.uri)

    # -- adding runs -----------------------------------------------------------------------

    def launch(self, spec: RunSpec | dict | None = None) -> RunHandle:
        """Launch ``spec`` (default: the builder's) as a background run and watch it."""
        handle = launch(self._spec(spec), threads=self.threads)
        self._add(handle)
        self.message.value = f"launched run <code>{handle.run_id}</code>"
        return handle

    def launch_sweep(
        self,
        spec: RunSpec | dict | None = None,
        points: int = 5,
        *,
        design: str = "grid",
        parallel: int = 2,
    ) -> studies.StudyHandle:
        """Launch a weight sweep of ``spec`` (default: the builder's) over ``points`` training
        weights (``design``: grid or random), ``parallel`` runs at a time, in a process of its own
        (:func:`workbench.studies.launch.launch_sweep`: it survives the kernel, and its parent
        run records the front). Its children are watched as they start. A bad spec or design
        fails here, before any process starts."""
        handle = studies.launch_sweep(
            self._spec(spec), points, design=design, parallel=parallel, uri=self.uri
        )
        return self._watch_study(handle)

    def launch_search(
        self, config: dict | str | Path, trials: int = 8, *, workers: int = 1
    ) -> studies.StudyHandle:
        """Launch a multi-objective search (``workbench search``: a run spec with a ``search``
        section, as a dict or a YAML file) of ``trials`` trials on ``workers`` worker processes,
        in a process of its own; its trials are watched as they start. A bad config fails here."""
        return self._watch_study(
            studies.launch_search(config, trials, workers=workers, uri=self.uri)
        )

    def _watch_study(self, handle: studies.StudyHandle) -> studies.StudyHandle:
        with self._lock:
            self.studies.append(handle)
        self.message.value = (
            f"{handle.what} launched (process {handle.pid}, log <code>{handle.log_path}</code>); "
            "its runs appear here as they start"
        )
        self._ensure_polling()
        return handle

    def _spec(self, spec: RunSpec | dict | None) -> RunSpec:
        if spec is None:
            if self.builder is None or self.builder.spec is None:
                raise ValueError(
                    "no valid spec to launch: "
                    + (self.builder.error if self.builder else "pass one")
                )
            return self.builder.spec
        return spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)

    def _watch_studies(self) -> None:
        """Attach the runs the running studies have started; say how a finished study ended."""
        for study in list(self.studies):
            running = study.alive()
            self.attach_started(study.experiment, study.started_ms)
            # (attaching refreshes, which may have seen it end)
            if not running and study in self.studies:
                self.studies.remove(study)
                tail = study.log_tail()
                verdict = (
                    "finished" if study.returncode == 0 else f"failed (exit {study.returncode})"
                )
                self.message.value = f"{study.what} {verdict}" + (
                    ": " + " / ".join(tail) if tail else ""
                )

    def _launch_from_builder(self) -> None:
        try:
            self.launch()
        except Exception as err:  # shown, not raised: a button callback has no caller
            self.message.value = f"<span style='color:#b00020'>{type(err).__name__}: {err}</span>"

    def attach_running(self, experiment: str) -> list[str]:
        """Watch every launched run of ``experiment`` that is still RUNNING; their ids."""
        ids = self._attach_new(running_runs(self._client(), experiment))
        if ids:
            self.message.value = f"attached to {len(ids)} running run(s) of '{experiment}'"
        return ids

    def attach_started(self, experiment: str, since_ms: int) -> list[str]:
        """Watch every run of ``experiment`` a process started since ``since_ms`` (a study's
        runs, the finished ones included); their ids."""
        return self._attach_new(runs_started_since(self._client(), experiment, since_ms))

    def _attach_new(self, run_ids: list[str]) -> list[str]:
        ids = [run_id for run_id in run_ids if run_id not in self.rows]
        for run_id in ids:
            self._add(attach(run_id, self.uri))
        return ids

    def _add(self, handle: RunHandle) -> None:
        name = self._client().get_run(handle.run_id).info.run_name or handle.run_id[:8]
        if name in {r.name for r in self.rows.values()}:  # one legend entry per run, told apart
            name = f"{name} ({handle.run_id[:8]})"
        row = _RunRow(
            handle,
            name,
            plots.run_color(len(self.rows)),
            w.IntProgress(value=0, min=0, max=1, description=""),
            w.HTML(),
            w.Button(description="Stop", icon="stop", button_style="danger"),
        )
        row.stop.on_click(lambda _, run_id=handle.run_id: self.stop(run_id))
        with self._lock:
            self.rows[handle.run_id] = row
            self.rows_box.children = tuple(r.box for r in self.rows.values())
        self.refresh()
        self._ensure_polling()

    # -- watching --------------------------------------------------------------------------

    def refresh(self) -> dict[str, str]:
        """Read every watched run from the store once; update bars and curves. Statuses by id."""
        client = self._client()
        with self._lock:
            if self.studies:
                self._watch_studies()
            for run_id, row in self.rows.items():
                if row.status in TERMINAL and row.bar.bar_style:
                    continue  # drawn in its final state already
                if row.status not in TERMINAL:
                    row.status = row.handle.status()  # ends a run whose process died FAILED
                progress = run_listing.run_progress(client, run_id)
                total = progress.row.total or 1
                row.bar.max = total
                row.bar.value = min(total, progress.row.step or 0)
                row.label.value = progress_text(progress)
                if row.status in TERMINAL:
                    row.bar.bar_style = _BAR_STYLE[row.status]
                    row.stop.disabled = True
                draw_run_curves(
                    self.loss_figure,
                    row.name,
                    run_id,
                    row.color,
                    run_curves(client, run_id, (TRAIN_PREFIX,)),
                )
                draw_run_curves(
                    self.objective_figure,
                    row.name,
                    run_id,
                    row.color,
                    run_curves(client, run_id, VALUE_PREFIXES),
                )
            return {run_id: row.status for run_id, row in self.rows.items()}

    def stop(self, run_id: str) -> str:
        """Stop a run (its process group gets SIGTERM; the run ends KILLED); its status."""
        row = self.rows[run_id]
        row.stop.disabled = True
        row.label.value = "stopping..."
        status = row.handle.stop()
        with self._lock:
            row.status = status
        self.refresh()
        return status

    def alive(self) -> bool:
        return bool(self.studies) or any(row.status not in TERMINAL for row in self.rows.values())

    def _ensure_polling(self) -> None:
        if self.poll_s is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(
            target=self._poll, name="workbench-run-monitor", daemon=True
        )
        self._thread.start()

    def _poll(self) -> None:
        while self.alive():
            try:
                self.refresh()
            except Exception as err:  # a store hiccup must not end the watching
                self.message.value = f"<span style='color:#b00020'>refresh failed: {err}</span>"
            self._wake.wait(self.poll_s)

    def close(self) -> None:
        """Stop watching (the runs go on)."""
        self.rows.clear()
        self._wake.set()
        super().close()
