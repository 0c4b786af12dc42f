"""Reading runs back from the store: runs with their params and objectives, metric histories."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from workbench.spec.mlflow_names import TAG_PARENT
from workbench.tracking.conventions import check_status
from workbench.tracking.run_listing import run_as_record


def runs_frame(
    client: MlflowClient,
    experiment: str,
    *,
    parent_run_id: str | None = None,
    status: str | None = "FINISHED",
) -> list[dict[str, Any]]:
    """One dict per run of ``experiment`` (oldest first), filtered by parent and status.

    Keys: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (ms),
    ``tags``, ``params``, ``metrics`` (latest value of each) and ``objectives``
    (``{name: latest value of objective/<name>}``). A missing experiment gives ``[]``;
    ``status=None`` keeps every status.
    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    filters = []
    if status:
        check_status(status, allow_running=True)
        filters.append(f"attributes.status = '{status}'")
    if parent_run_id:
        filters.append(f"tags.`{TAG_PARENT}` = '{parent_run_id}'")
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=" and ".join(filters),
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        out.extend(run_record(run) for run in page)
        token = page.token
        if not token:
            return out


def last_steps(client: MlflowClient, run_id: str) -> dict[str, int]:
    """The last step the store holds for each metric key of a run."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every point of ``key``, sorted by step (then time)."""
    seen = set()
    points = []
    for m in client.get_metric_history(run_id, key):
        ident = (m.step, m.timestamp, m.value)
        if ident not in seen:  # a retried batch the store had already taken
            seen.add(ident)
            points.append(ident)
    points.sort(key=lambda p: (p[0], p[1]))
    return [(step, value) for step, _, value in points]


def run_record(run) -> dict[str, Any]:
    """One MLflow run as a plain dict (:func:`~workbench.tracking.run_listing.run_as_record`):
    ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (ms), ``tags``,
    ``params``, ``metrics`` (latest value of each), ``objectives`` and ``costs``."""
    return run_as_record(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )
