"""Finding and watching runs: what ``workbench runs``, ``status`` and ``front`` read from MLflow.

Plain data from the store (no torch): one :class:`RunRow` per run with its status, its step
of total (the latest ``train/loss`` step against the spec's ``train.steps``), its objectives
and its parent; a :class:`RunProgress` of one run with its last loss and an ETA; the rows of a
front grouped by the sweep each run belongs to. Printing is the caller's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from workbench import tracking
from workbench.errors import TrackingError

LOSS_KEY = "train/loss"
STEP_TIME_KEY = "perf/step_s"
STEPS_PARAM = "train.steps"
KIND_TAG = "workbench.kind"


@dataclass
class RunRow:
    """One run as ``workbench runs`` lists it."""

    run_id: str
    name: str
    status: str
    experiment: str
    step: int | None  # latest train/loss step; None before the first
    total: int | None  # the spec's train.steps; None for a sweep's parent
    objectives: dict[str, float] = field(default_factory=dict)
    parent: str | None = None
    kind: str = "run"  # "run", or "sweep" for a sweep's parent
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None

    @property
    def step_of_total(self) -> str:
        if self.total is None:
            return ""
        return f"{self.step if self.step is not None else 0}/{self.total}"


@dataclass
class RunProgress:
    """Where one run stands, for ``workbench status``."""

    row: RunRow
    last_loss: float | None
    step_s: float | None  # seconds per optimizer step (perf/step_s, else elapsed / steps)
    elapsed_s: float | None
    eta_s: float | None  # None when finished or not yet measurable
    error: str | None = None


def experiment_names(client) -> list[str]:
    return sorted(e.name for e in client.search_experiments())


def unknown_experiment(client, name: str) -> TrackingError:
    """The error for an experiment the store does not have, naming the ones it has."""
    names = experiment_names(client)
    have = ", ".join(names) if names else "none yet"
    return TrackingError(f"no experiment '{name}' in {client.tracking_uri}; its experiments: {have}")


def list_runs(client, experiment: str | None = None) -> list[RunRow]:
    """Every run of ``experiment`` (all experiments when None), oldest first.

    Raises :class:`TrackingError` naming the existing experiments when ``experiment`` is not one.
    """
    if experiment is None:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise unknown_experiment(client, experiment)
        experiments = {found.experiment_id: found.name}
    if not experiments:
        return []
    rows, token = [], None
    while True:
        page = client.search_runs(list(experiments), max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        rows += [_row(run, experiments[run.info.experiment_id]) for run in page]
        token = page.token
        if not token:
            return rows


def get_row(client, run_id: str) -> RunRow:
    try:
        run = client.get_run(run_id)
    except Exception as err:  # MLflow raises its own exception types for missing runs
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    experiment = client.get_experiment(run.info.experiment_id).name
    return _row(run, experiment)


def run_progress(client, run_id: str, now: float | None = None) -> RunProgress:
    """Status, step of total, last loss and (while it runs) the ETA of one run.

    The ETA is the steps left times the latest ``perf/step_s`` (the time of an optimizer
    step), else times the elapsed time per step so far (which counts model loading too).
    """
    now = time.time() if now is None else now
    row = get_row(client, run_id)
    raw = client.get_run(run_id)
    latest = _latest_metrics(raw)
    last_loss = latest[LOSS_KEY][0] if LOSS_KEY in latest else None
    end = row.end_time if row.status in tracking.END_STATUSES and row.end_time else now
    elapsed = end - row.start_time if row.start_time else None
    step_s = latest[STEP_TIME_KEY][0] if STEP_TIME_KEY in latest else None
    if step_s is None and elapsed and row.step:
        step_s = elapsed / row.step
    eta = None
    if row.status == "RUNNING" and row.total is not None and step_s is not None:
        eta = max(0, row.total - (row.step or 0)) * step_s
    return RunProgress(row, last_loss, step_s, elapsed, eta, raw.data.tags.get(tracking.TAG_ERROR))


def front_rows(front, runs: list[dict], parents: dict[str, str]) -> list[dict[str, Any]]:
    """The front's runs as rows ``{"sweep", "label", "run_id", <objectives>}``, grouped by the
    sweep (parent run) each belongs to, in the order the sweeps started, then by the first
    objective. ``runs`` are those ``front`` was built from (``tracking.runs_frame`` dicts, in
    the same order); ``parents`` maps a parent's run id to its name. Repeated sweeps keep
    their points apart instead of listing the same labels twice in one block."""
    kept = [r for r in runs if all(n in r["objectives"] for n in front.names)]
    order = {pid: i for i, pid in enumerate(parents)}
    rows = []
    for i, run in enumerate(kept):
        if not front.mask[i]:
            continue
        parent = run["tags"].get(tracking.TAG_PARENT)
        sweep = f"{parents.get(parent, 'sweep')} {parent[:8]}" if parent else "-"
        rows.append({"sweep": sweep, "label": run.get("run_name") or run["run_id"],
                     "run_id": run["run_id"],
                     **{n: float(front.points[i][j]) for j, n in enumerate(front.names)},
                     "_group": order.get(parent, -1)})
    rows.sort(key=lambda r: (r["_group"], *(r[n] for n in front.names)))
    for r in rows:
        del r["_group"]
    return rows


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _latest_metrics(run) -> dict[str, tuple[float, int]]:
    """{key: (value, step)} of the latest point of each metric (the highest step)."""
    objs = getattr(run.data, "_metric_objs", None)
    if objs is not None:
        return {m.key: (m.value, m.step) for m in objs}
    return {k: (v, 0) for k, v in run.data.metrics.items()}


def _row(run, experiment: str) -> RunRow:
    latest = _latest_metrics(run)
    tags, params = run.data.tags, run.data.params
    kind = tags.get(KIND_TAG, "run")
    total = params.get(STEPS_PARAM)
    return RunRow(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        experiment=experiment,
        step=latest[LOSS_KEY][1] if LOSS_KEY in latest else None,
        total=int(total) if total and total.isdigit() and kind == "run" else None,
        objectives={k[len(tracking.OBJECTIVE_PREFIX):]: v for k, (v, _) in latest.items()
                    if k.startswith(tracking.OBJECTIVE_PREFIX)},
        parent=tags.get(tracking.TAG_PARENT),
        kind=kind,
        start_time=run.info.start_time / 1000.0 if run.info.start_time else None,
        end_time=run.info.end_time / 1000.0 if run.info.end_time else None,
    )
