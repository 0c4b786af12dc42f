"""Where a resumed run continues: its stored spec, its last checkpoint, the last step the
store holds of each metric, and the allocator it started on.

A FAILED or KILLED run resumes in the same MLflow run (:func:`workbench.running.pipeline.resume`).
Rank 0 reads the store; the other ranks of a multi-node run read only the checkpoint folder
and the run's tags, since the metrics are rank 0's to log.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from workbench import tracking
from workbench.running import allocator, checkpoints
from workbench.spec import paths, plugins
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import TAG_ALLOCATOR
from workbench.spec.plugins import import_plugins
from workbench.spec.run_spec import RunSpec


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: its last checkpoint, that checkpoint's optimizer step,
    and the last step the store holds of each metric (rank 0 only; empty elsewhere)."""

    checkpoint: Path
    step: int
    stored: dict[str, int] = field(default_factory=dict)
    # The allocator the run started on: ``kernels: auto`` chose its ops for it on a CPU, and a
    # resumed run keeps those ops (the same numbers) whatever process it continues in.
    allocator: str | None = None


def resume_spec(run_id: str) -> RunSpec:
    """The stored spec of ``run_id`` (its plugins imported, so it validates)."""
    client = tracking.connect()
    try:
        import_plugins(client.get_run(run_id).data.tags.get(plugins.TAG, ""))
    except Exception as err:  # MLflow's own exception types for a missing run
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    return RunSpec.from_yaml(_download_text(client, run_id, "spec.yaml"))


def _download_text(client, run_id: str, artifact: str) -> str:
    """The text of one of ``run_id``'s artifacts; a TrackingError that names the store where
    it cannot be read."""
    import mlflow

    try:
        client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            with open(path, encoding="utf-8") as f:
                return f.read()
    except Exception as err:  # MLflow raises its own exception types
        raise TrackingError(
            f"cannot read {artifact} of run {run_id} from {client.tracking_uri}: {err}"
        ) from None


def resume_point(client, run_id: str) -> ResumePoint:
    """The checkpoint a run resumes from, its optimizer step and the last step the store
    holds of each metric (rank 0)."""
    folder = paths.checkpoint_dir(client.tracking_uri) / run_id
    ckpt = checkpoints.last(folder)
    if ckpt is None:
        raise TrackingError(
            f"run {run_id} has no checkpoint in {folder}, so it cannot be resumed; runs "
            "save checkpoints every train.checkpoint_every steps (set it to make runs resumable)"
        )
    return ResumePoint(
        ckpt,
        checkpoints.step(ckpt),
        tracking.last_steps(client, run_id),
        started_on(client, run_id),
    )


def other_rank_resume_point(run_id: str) -> ResumePoint:
    """Rank 0's checkpoint, read from the same folder (the store's steps are rank 0's)."""
    client = tracking.connect()
    ckpt = checkpoints.last(paths.checkpoint_dir(client.tracking_uri) / run_id)
    return ResumePoint(ckpt, checkpoints.step(ckpt), allocator=started_on(client, run_id))


def started_on(client, run_id: str) -> str | None:
    """The allocator the run started on (its tag), or None for a run recorded without one."""
    return client.get_run(run_id).data.tags.get(TAG_ALLOCATOR)


def kernel_allocator(resume_from: ResumePoint | None) -> str:
    """The allocator a run's kernels are chosen for, and its tag: the one it started on where
    that is recorded, else this process's."""
    recorded = resume_from.allocator if resume_from is not None else None
    return recorded or allocator.running()
