"""Finding and watching runs: what ``workbench runs``, ``status`` and ``front`` read from MLflow.

Plain data from the store (no torch): one :class:`RunRow` per run with its status, its step
of total (the latest ``train/loss`` step against the spec's ``train.steps``), its objectives
and its parent; a :class:`RunProgress` of one run with its last loss and an ETA; the rows of a
front grouped by the sweep each run belongs to. Printing is the caller's.

Reading is fast on purpose. Importing MLflow and opening its SQLAlchemy store take 3-4 s on
two idle cores (far more beside a training run), while the answer itself is a few queries.
So a local sqlite store is read with the standard library's ``sqlite3``, read-only, in the
tables MLflow keeps for exactly this (``runs``, ``tags``, ``params``, ``latest_metrics``);
any other store (a tracking server), or a sqlite file this reader does not recognise, is read
through MLflow's client. Both give the same :class:`StoredRun` records. Nothing here writes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.spec import paths
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import (
    COST_METRIC_KEYS,
    END_STATUSES,
    HEARTBEAT_TAG,
    KIND_RUN,
    LOSS_KEY,
    OBJECTIVE_PREFIX,
    PHASE_TAG,
    STEP_TIME_KEY,
    TAG_KIND,
)
from workbench.spec.mlflow_names import TAG_ERROR as ERROR_TAG
from workbench.spec.mlflow_names import TAG_PARENT as PARENT_TAG

STEPS_PARAM = "train.steps"
# A RUNNING run whose process refreshed its heartbeat (every 5 s) this recently is alive: the
# listing commands leave it to the reaper only when it has been silent longer.
FRESH_HEARTBEAT_S = 30.0
# Runs an ambiguous id prefix lists, at most.
SHOWN_MATCHES = 10
RUN_ID_LENGTH = 32  # MLflow's run ids: 32 hex digits


@dataclass
class StoredRun:
    """One run as the store holds it: what every listing is made from."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    start_time: int | None  # ms since the epoch, as MLflow keeps it
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    latest: dict[str, tuple[float, int]] = field(default_factory=dict)  # key: (value, step)


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
    heartbeat: float | None = None  # seconds since the epoch of the last heartbeat, if any
    experiment_id: str = ""

    @property
    def step_of_total(self) -> str:
        if self.total is None:
            return ""
        return f"{self.step if self.step is not None else 0}/{self.total}"

    def recently_alive(self, now: float | None = None) -> bool:
        """Its process wrote a heartbeat within :data:`FRESH_HEARTBEAT_S`."""
        now = time.time() if now is None else now
        return self.heartbeat is not None and now - self.heartbeat < FRESH_HEARTBEAT_S


@dataclass
class RunProgress:
    """Where one run stands, for ``workbench status``."""

    row: RunRow
    last_loss: float | None
    step_s: float | None  # seconds per optimizer step (perf/step_s, else elapsed / steps)
    elapsed_s: float | None
    eta_s: float | None  # None when finished or not yet measurable
    error: str | None = None
    phase: str | None = None  # what a RUNNING run does before its first step (loading its base)


# -- the two readers -------------------------------------------------------------------------


class SqliteStore:
    """A local MLflow sqlite store, read with ``sqlite3`` in read-only mode.

    ``open`` answers None when the file is missing or its tables are not the ones this
    reader knows (another MLflow version's schema); the caller then uses :class:`ClientStore`.
    """

    # How long a query waits while a training run writes (sqlite locks the whole file).
    BUSY_TIMEOUT_S = 30.0
    _TABLES = {
        "experiments": {"experiment_id", "name", "lifecycle_stage"},
        "runs": {"run_uuid", "name", "status", "start_time", "end_time", "lifecycle_stage",
                 "experiment_id"},
        "tags": {"key", "value", "run_uuid"},
        "params": {"key", "value", "run_uuid"},
        "latest_metrics": {"key", "value", "step", "is_nan", "run_uuid"},
    }  # fmt: skip

    def __init__(self, db: Path, uri: str, connection: sqlite3.Connection):
        self.db, self.tracking_uri, self._db = db, uri, connection
        self._client = None

    @classmethod
    def open(cls, uri: str) -> SqliteStore | None:
        if not uri.startswith("sqlite:///") or "?" in uri:
            return None
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            return None  # MLflow's client creates the store; this reader only reads
        try:
            connection = sqlite3.connect(
                f"{db.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=cls.BUSY_TIMEOUT_S,
                check_same_thread=False,
            )
            for table, needed in cls._TABLES.items():
                columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                if not needed <= columns:
                    connection.close()
                    return None
        except sqlite3.Error:
            return None
        return cls(db, uri, connection)

    def client(self):
        """An MLflow client on the same store, for writing (imported on first use)."""
        if self._client is None:
            from workbench import tracking

            self._client = tracking.connect(self.tracking_uri)
        return self._client

    def experiments(self) -> dict[str, str]:
        rows = self._query(
            "SELECT experiment_id, name FROM experiments "
            "WHERE lifecycle_stage = 'active' ORDER BY experiment_id"
        )
        return {str(eid): name for eid, name in rows}

    def runs(
        self,
        experiment_ids: Iterable[str] | None = None,
        *,
        id_prefix: str | None = None,
        status: str | None = None,
    ) -> list[StoredRun]:
        where, args = ["r.lifecycle_stage = 'active'", "e.lifecycle_stage = 'active'"], []
        if experiment_ids is not None:
            ids = [int(i) for i in experiment_ids]
            if not ids:
                return []
            where.append(f"r.experiment_id IN ({', '.join('?' * len(ids))})")
            args += ids
        if id_prefix is not None:
            where.append("r.run_uuid LIKE ? ESCAPE '\\'")
            args.append(
                id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        found = self._query(
            "SELECT r.run_uuid, r.name, r.status, r.experiment_id, r.start_time, r.end_time "
            "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            f"WHERE {' AND '.join(where)} ORDER BY r.start_time ASC, r.run_uuid ASC",
            args,
        )
        runs = {
            rid: StoredRun(rid, name or "", status, str(eid), start, end)
            for rid, name, status, eid, start, end in found
        }
        if not runs:
            return []
        # One query per table for every run at once; a list of ids is bounded by sqlite's
        # variable limit, so long lists go in slices.
        ids = list(runs)
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            marks = ", ".join("?" * len(chunk))
            for key, value, rid in self._query(
                f"SELECT key, value, run_uuid FROM tags WHERE run_uuid IN ({marks})", chunk
            ):
                runs[rid].tags[key] = value
            for key, value, rid in self._query(
                f"SELECT key, value, run_uuid FROM params WHERE run_uuid IN ({marks})", chunk
            ):
                runs[rid].params[key] = value
            for key, value, step, is_nan, rid in self._query(
                "SELECT key, value, step, is_nan, run_uuid FROM latest_metrics "
                f"WHERE run_uuid IN ({marks})",
                chunk,
            ):
                runs[rid].latest[key] = (math.nan if is_nan else float(value), int(step))
        return list(runs.values())

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as err:
            raise TrackingError(
                f"cannot read the MLflow store {self.tracking_uri}: {err}; "
                "check the file, or point MLFLOW_TRACKING_URI at another store"
            ) from None


class ClientStore:
    """Any MLflow store (a tracking server, or a sqlite file of an unknown schema), read through
    MLflow's client."""

    def __init__(self, client):
        self._client = client
        self.tracking_uri = client.tracking_uri

    def client(self):
        return self._client

    def experiments(self) -> dict[str, str]:
        return {e.experiment_id: e.name for e in self._client.search_experiments()}

    def runs(
        self,
        experiment_ids: Iterable[str] | None = None,
        *,
        id_prefix: str | None = None,
        status: str | None = None,
    ) -> list[StoredRun]:
        if id_prefix is not None and len(id_prefix) == RUN_ID_LENGTH:
            return self._whole_id(id_prefix, experiment_ids, status)
        ids = list(self.experiments()) if experiment_ids is None else list(experiment_ids)
        if not ids:
            return []
        found, token = [], None
        while True:
            page = self._client.search_runs(
                ids,
                filter_string=f"attributes.status = '{status}'" if status else "",
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            found += [
                stored_run(run)
                for run in page
                if id_prefix is None or run.info.run_id.startswith(id_prefix)
            ]
            token = page.token
            if not token:
                return found

    def _whole_id(self, run_id: str, experiment_ids, status) -> list[StoredRun]:
        """A whole id is one request (a watcher asks every second), not a search of the store."""
        try:
            run = self._client.get_run(run_id)
        except Exception:  # MLflow raises its own exception types for a missing run
            return []
        kept = (
            run.info.lifecycle_stage == "active"
            and (experiment_ids is None or run.info.experiment_id in set(experiment_ids))
            and (status is None or run.info.status == status)
        )
        return [stored_run(run)] if kept else []


def open_store(uri: str | None = None):
    """The store :func:`workbench.spec.paths.tracking_uri` picks for ``uri``: a :class:`SqliteStore`
    when it is a local sqlite file this reader knows, else a :class:`ClientStore`."""
    resolved = paths.tracking_uri(uri)
    fast = SqliteStore.open(resolved)
    if fast is not None:
        return fast
    from workbench import tracking

    return ClientStore(tracking.connect(resolved))


def _reader(store):
    """A store reader from either reader or an MLflow client (the widgets pass their client)."""
    return store if isinstance(store, SqliteStore | ClientStore) else ClientStore(store)


def stored_run(run) -> StoredRun:
    """An MLflow ``Run`` as a :class:`StoredRun`."""
    objs = getattr(run.data, "_metric_objs", None)
    if objs is not None:
        latest = {m.key: (m.value, m.step) for m in objs}
    else:
        latest = {k: (v, 0) for k, v in run.data.metrics.items()}
    return StoredRun(
        run.info.run_id,
        run.info.run_name or "",
        run.info.status,
        run.info.experiment_id,
        run.info.start_time,
        run.info.end_time,
        dict(run.data.tags),
        dict(run.data.params),
        latest,
    )


# -- what the commands read ------------------------------------------------------------------


def experiment_names(store) -> list[str]:
    return sorted(_reader(store).experiments().values())


def unknown_experiment(store, name: str) -> TrackingError:
    """The error for an experiment the store does not have, naming the ones it has."""
    names = experiment_names(store)
    have = ", ".join(names) if names else "none yet"
    return TrackingError(
        f"no experiment '{name}' in {_reader(store).tracking_uri}; its experiments: {have}"
    )


def experiment_ids(store, experiment: str | None = None) -> dict[str, str]:
    """{id: name} of ``experiment`` (every experiment when None).

    Raises :class:`TrackingError` naming the existing experiments when ``experiment`` is not one.
    """
    every = _reader(store).experiments()
    if experiment is None:
        return every
    found = {eid: name for eid, name in every.items() if name == experiment}
    if not found:
        raise unknown_experiment(store, experiment)
    return found


def list_runs(store, experiment: str | None = None, *, status: str | None = None) -> list[RunRow]:
    """Every run of ``experiment`` (all experiments when None), oldest first; ``status`` keeps
    only the runs in that status.

    Raises :class:`TrackingError` naming the existing experiments when ``experiment`` is not one.
    """
    reader = _reader(store)
    experiments = experiment_ids(reader, experiment)
    if not experiments:
        return []
    return [
        row(run, experiments.get(run.experiment_id, ""))
        for run in reader.runs(list(experiments), status=status)
    ]


def run_records(store, experiment: str, *, status: str | None = None) -> list[dict[str, Any]]:
    """Every run of ``experiment`` (oldest first) as the dicts ``tracking.runs_frame`` gives
    (``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` in ms, ``tags``,
    ``params``, ``metrics``: the latest value of each, ``objectives``); every status kept,
    or only ``status``."""
    reader = _reader(store)
    experiments = experiment_ids(reader, experiment)
    records = []
    for run in reader.runs(list(experiments), status=status):
        metrics = {k: v for k, (v, _) in run.latest.items()}
        records.append(
            run_as_record(
                run_id=run.run_id,
                run_name=run.name,
                status=run.status,
                start_time=run.start_time,
                end_time=run.end_time,
                tags=run.tags,
                params=run.params,
                metrics=metrics,
            )
        )
    return records


def finished_run_records(store, experiment: str) -> list[dict[str, Any]]:
    """The FINISHED runs of ``experiment`` as :func:`run_records` gives them, oldest first;
    ``[]`` when the store has no such experiment. The same answer as
    ``tracking.runs_frame(client, experiment)``, read without MLflow from a local sqlite
    store (:func:`children` picks one sweep's runs out of it)."""
    reader = _reader(store)
    if experiment not in reader.experiments().values():
        return []
    return run_records(reader, experiment, status="FINISHED")


def children(records: list[dict[str, Any]], parent_run_id: str | None) -> list[dict[str, Any]]:
    """The records whose parent run (a sweep's, a search's) is ``parent_run_id``; all of them
    when it is None."""
    if parent_run_id is None:
        return records
    return [r for r in records if r["tags"].get(PARENT_TAG) == parent_run_id]


def run_as_record(
    *,
    run_id: str,
    run_name: str | None,
    status: str,
    start_time: int | None,
    end_time: int | None,
    tags: dict[str, str],
    params: dict[str, str],
    metrics: dict[str, float],
) -> dict[str, Any]:
    """A run as the plain dict every reader of runs returns (MLflow's client here and the
    sqlite reader alike): the arguments, ``objectives`` (``{name: latest value of
    objective/<name>}``) and ``costs`` (``{name: value}`` of the run-level costs it logged,
    the spec's ``cost:<name>``)."""
    return {
        "run_id": run_id,
        "run_name": run_name,
        "status": status,
        "start_time": start_time,
        "end_time": end_time,
        "tags": tags,
        "params": params,
        "metrics": metrics,
        "objectives": {
            k[len(OBJECTIVE_PREFIX) :]: v
            for k, v in metrics.items()
            if k.startswith(OBJECTIVE_PREFIX)
        },
        "costs": {name: metrics[key] for name, key in COST_METRIC_KEYS.items() if key in metrics},
    }


def find_run(store, run_id: str) -> StoredRun:
    """The one run whose id is ``run_id`` or starts with it (the 8-character ids that
    ``runs`` and ``front`` print are enough).

    Raises :class:`TrackingError` when no run matches (naming the store and how to list its
    runs) or when several do (naming them, so one more character can tell them apart).
    """
    reader = _reader(store)
    prefix = run_id.strip().lower()
    if not prefix:
        raise TrackingError("give a run id (or its first characters); `workbench runs` lists them")
    matches = reader.runs(id_prefix=prefix)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise TrackingError(
            f"no run whose id starts with '{prefix}' in the store {reader.tracking_uri}; "
            "`workbench runs` lists the runs and their ids (another store? "
            "MLFLOW_TRACKING_URI picks it)"
        )
    experiments = reader.experiments()
    shown = [
        f"  {r.run_id}  {r.name or '-'} (experiment "
        f"'{experiments.get(r.experiment_id, r.experiment_id)}', {r.status})"
        for r in matches[:SHOWN_MATCHES]
    ]
    if len(matches) > SHOWN_MATCHES:
        shown.append(f"  and {len(matches) - SHOWN_MATCHES} more")
    raise TrackingError(
        f"{len(matches)} runs have ids starting with '{prefix}'; give more "
        "characters of the id:\n" + "\n".join(shown)
    )


def get_row(store, run_id: str) -> RunRow:
    """The row of the run ``run_id`` names (a whole id or a unique prefix: :func:`find_run`)."""
    reader = _reader(store)
    run = find_run(reader, run_id)
    return row(run, reader.experiments().get(run.experiment_id, run.experiment_id))


def run_progress(store, run_id: str, now: float | None = None) -> RunProgress:
    """Status, step of total, last loss and (while it runs) the ETA of one run (``run_id``: a
    whole id or a unique prefix).

    The ETA is the steps left times the latest ``perf/step_s`` (the time of an optimizer
    step), else times the elapsed time per step so far (which counts model loading too).
    """
    reader = _reader(store)
    run = find_run(reader, run_id)
    return progress_of(run, reader.experiments().get(run.experiment_id, run.experiment_id), now)


def progress_of(run: StoredRun, experiment: str, now: float | None = None) -> RunProgress:
    """:func:`run_progress` of a run already read."""
    now = time.time() if now is None else now
    found = row(run, experiment)
    last_loss = run.latest[LOSS_KEY][0] if LOSS_KEY in run.latest else None
    end = found.end_time if found.status in END_STATUSES and found.end_time else now
    elapsed = end - found.start_time if found.start_time else None
    step_s = run.latest[STEP_TIME_KEY][0] if STEP_TIME_KEY in run.latest else None
    if step_s is None and elapsed and found.step:
        step_s = elapsed / found.step
    eta = None
    if found.status == "RUNNING" and found.total is not None and step_s is not None:
        eta = max(0, found.total - (found.step or 0)) * step_s
    phase = run.tags.get(PHASE_TAG) if found.status == "RUNNING" and found.step is None else None
    return RunProgress(found, last_loss, step_s, elapsed, eta, run.tags.get(ERROR_TAG), phase)


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
        parent = run["tags"].get(PARENT_TAG)
        sweep = f"{parents.get(parent, 'sweep')} {parent[:8]}" if parent else "-"
        rows.append(
            {
                "sweep": sweep,
                "label": run.get("run_name") or run["run_id"],
                "run_id": run["run_id"],
                **{n: float(front.points[i][j]) for j, n in enumerate(front.names)},
                "_group": order.get(parent, -1),
            }
        )
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


def row(run: StoredRun, experiment: str) -> RunRow:
    """A stored run as a :class:`RunRow` of ``experiment`` (its name)."""
    kind = run.tags.get(TAG_KIND, KIND_RUN)
    total = run.params.get(STEPS_PARAM)
    beat = run.tags.get(HEARTBEAT_TAG)
    try:
        heartbeat = float(beat) if beat is not None else None
    except ValueError:
        heartbeat = None
    return RunRow(
        run_id=run.run_id,
        name=run.name,
        status=run.status,
        experiment=experiment,
        step=run.latest[LOSS_KEY][1] if LOSS_KEY in run.latest else None,
        total=int(total) if total and total.isdigit() and kind == "run" else None,
        objectives={
            k[len(OBJECTIVE_PREFIX) :]: v
            for k, (v, _) in run.latest.items()
            if k.startswith(OBJECTIVE_PREFIX)
        },
        parent=run.tags.get(PARENT_TAG),
        kind=kind,
        start_time=run.start_time / 1000.0 if run.start_time else None,
        end_time=run.end_time / 1000.0 if run.end_time else None,
        heartbeat=heartbeat,
        experiment_id=run.experiment_id,
    )
