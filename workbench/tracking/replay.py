"""An experiment as one file, and back: for showing recorded runs where no training is possible.

:func:`archive_experiment` writes an experiment's finished runs (their names, times, status,
parameters, tags, every point of every metric, and their small artifacts: the spec, sample
completions, front tables and plots) into one zip file. :func:`replay_archive` recreates
them in another MLflow store (a laptop's ``mlruns/``, a workshop's server), so the notebook
widgets and the MLflow UI show the same runs, fronts and curves there. A workshop room
without the CPU to train replays a teacher's experiment instead.

Written here rather than with the ``mlflow-export-import`` package: its last release (2023)
predates MLflow 3, and it writes a folder tree per object where a class wants one file.
Run ids are new in the target store; tags that named a run of the archive (a sweep child's
parent) are rewritten to the new ids.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from workbench import tracking
from workbench.spec import mlflow_names
from workbench.spec.errors import TrackingError
from workbench.tracking.conventions import chunks

FORMAT = "workbench-experiment/1"
MANIFEST = "experiment.json"
# MLflow's limits per log_batch call.
_METRICS_PER_BATCH, _PARAMS_PER_BATCH, _TAGS_PER_BATCH = 1000, 100, 100
_UNFINISHED = ("RUNNING", "SCHEDULED")


@dataclass(frozen=True)
class ArchiveSummary:
    path: Path
    runs: int
    metric_points: int
    artifacts: int
    skipped_artifacts: list[str]  # "<run name>/<path> (<size> MB)" left out by the size limit
    skipped_runs: list[str]  # unfinished runs (an archive holds finished ones only)


@dataclass(frozen=True)
class ReplaySummary:
    experiment: str
    run_ids: dict[str, str]  # archived run id -> run id in the target store


def archive_experiment(
    experiment: str,
    path: str | os.PathLike,
    *,
    uri: str | None = None,
    max_artifact_mb: float = 5.0,
    log: Callable[[str], None] = lambda _: None,
) -> ArchiveSummary:
    """Write the finished runs of ``experiment`` into the zip file ``path``.

    Artifacts larger than ``max_artifact_mb`` (model weights, checkpoints) are left out and
    listed in the summary. The file is written beside ``path`` and moved into place at the
    end, so a failure leaves no half-written archive.
    """
    client = tracking.connect(uri)
    runs = tracking.runs_frame(client, experiment, status=None)
    if not runs:
        if client.get_experiment_by_name(experiment) is None:
            names = sorted(e.name for e in client.search_experiments())
            raise TrackingError(
                f"no experiment '{experiment}' in the store; it has: {', '.join(names) or 'none'}"
            )
        raise TrackingError(f"experiment '{experiment}' has no runs to archive")
    skipped_runs = [f"{r['run_name']} ({r['status']})" for r in runs if r["status"] in _UNFINISHED]
    runs = [r for r in runs if r["status"] not in _UNFINISHED]
    limit = int(max_artifact_mb * 1024 * 1024)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest_runs, points, n_artifacts, skipped = [], 0, 0, []
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
    ) as part:
        part_path = Path(part.name)
    try:
        with (
            zipfile.ZipFile(part_path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            tempfile.TemporaryDirectory() as downloads,
        ):
            for i, run in enumerate(runs, 1):
                histories = {
                    key: [
                        [m.step, m.timestamp, m.value]
                        for m in client.get_metric_history(run["run_id"], key)
                    ]
                    for key in run["metrics"]
                }
                points += sum(len(h) for h in histories.values())
                artifacts = []
                for artifact, size in artifact_files(client, run["run_id"]):
                    if size is not None and size > limit:
                        skipped.append(f"{run['run_name']}/{artifact} ({size / 2**20:.1f} MB)")
                        continue
                    local = client.download_artifacts(run["run_id"], artifact, downloads)
                    archive.write(local, f"artifacts/{run['run_id']}/{artifact}")
                    artifacts.append(artifact)
                n_artifacts += len(artifacts)
                manifest_runs.append(
                    {
                        key: run[key]
                        for key in (
                            "run_id",
                            "run_name",
                            "status",
                            "start_time",
                            "end_time",
                            "tags",
                            "params",
                        )
                    }
                    | {"metrics": histories, "artifacts": artifacts}
                )
                log(f"archived run {i}/{len(runs)}: {run['run_name']}")
            archive.writestr(
                MANIFEST,
                json.dumps({"format": FORMAT, "experiment": experiment, "runs": manifest_runs}),
            )
        os.replace(part_path, target)
    finally:
        part_path.unlink(missing_ok=True)
    return ArchiveSummary(target, len(manifest_runs), points, n_artifacts, skipped, skipped_runs)


def artifact_files(client, run_id: str, folder: str | None = None):
    """``(path, size)`` of every artifact file of a run, depth first."""
    for entry in client.list_artifacts(run_id, folder):
        if entry.is_dir:
            yield from artifact_files(client, run_id, entry.path)
        else:
            yield entry.path, entry.file_size


def read_manifest(path: str | os.PathLike) -> dict:
    """The archive's manifest, checked: a clear error for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise TrackingError(
            f"no archive at {path}; make one with `workbench archive EXPERIMENT FILE`"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            names = set(archive.namelist())
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise TrackingError(
            f"{path} is not an experiment archive ({exc}); make one with "
            "`workbench archive EXPERIMENT FILE`"
        ) from None
    if manifest.get("format") != FORMAT:
        raise TrackingError(
            f"{path} has format {manifest.get('format')!r}; this workbench reads {FORMAT!r}"
        )
    missing = [
        f"{r['run_name']}/{a}"
        for r in manifest["runs"]
        for a in r["artifacts"]
        if f"artifacts/{r['run_id']}/{a}" not in names
    ]
    if missing:
        raise TrackingError(
            f"{path} is incomplete: artifacts listed but not stored: {', '.join(missing[:5])}"
        )
    return manifest


def replay_archive(
    path: str | os.PathLike,
    *,
    uri: str | None = None,
    experiment: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ReplaySummary:
    """Recreate the archive's runs in the store (``uri``, else the usual store rule) under
    ``experiment`` (default: the archived name), which must not exist there yet.

    Everything is checked before the first write; should writing still fail, the runs
    created so far are deleted, so the store holds all of the archive or none of it.
    """
    from mlflow.entities import Metric, Param, RunTag

    manifest = read_manifest(path)
    name = experiment or manifest["experiment"]
    client = tracking.connect(uri)
    if client.get_experiment_by_name(name) is not None:
        raise TrackingError(
            f"the store already has an experiment '{name}'; replay under another name "
            f"(`workbench replay {Path(path).name} --experiment NEW_NAME`)"
        )
    experiment_id = client.create_experiment(name)
    # Parents before children, so a child's parent tag can name the parent's new id.
    runs = sorted(
        manifest["runs"], key=lambda r: r["tags"].get(mlflow_names.TAG_PARENT) is not None
    )
    new_ids: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as unpacked:
            for i, run in enumerate(runs, 1):
                tags = {k: new_ids.get(v, v) for k, v in run["tags"].items()}
                created = client.create_run(
                    experiment_id, start_time=run["start_time"], run_name=run["run_name"]
                )
                run_id = new_ids[run["run_id"]] = created.info.run_id
                metrics = [
                    Metric(key, value, timestamp, step)
                    for key, history in run["metrics"].items()
                    for step, timestamp, value in history
                ]
                params = [Param(k, v) for k, v in run["params"].items()]
                tag_list = [RunTag(k, v) for k, v in tags.items() if k != "mlflow.runName"]
                for chunk in chunks(metrics, _METRICS_PER_BATCH):
                    client.log_batch(run_id, metrics=chunk)
                for chunk in chunks(params, _PARAMS_PER_BATCH):
                    client.log_batch(run_id, params=chunk)
                for chunk in chunks(tag_list, _TAGS_PER_BATCH):
                    client.log_batch(run_id, tags=chunk)
                for artifact in run["artifacts"]:
                    local = archive.extract(f"artifacts/{run['run_id']}/{artifact}", unpacked)
                    folder = str(PurePosixPath(artifact).parent)
                    client.log_artifact(run_id, local, None if folder == "." else folder)
                client.set_terminated(run_id, run["status"], end_time=run["end_time"])
                log(f"replayed run {i}/{len(runs)}: {run['run_name']}")
    except BaseException:
        for run_id in new_ids.values():
            client.delete_run(run_id)
        client.delete_experiment(experiment_id)
        raise
    return ReplaySummary(name, new_ids)
