"""Connecting to the MLflow store, and creating and ending runs from a RunSpec."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from filelock import FileLock
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from workbench.running.library_output import ignoring_warning, quiet_store_loggers
from workbench.spec import paths
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import (
    AUTHOR_ENV,
    DECLARED_DEAD_TAG,
    SPEC_ARTIFACT,
    TAG_ADAPTER,
    TAG_AUTHOR,
    TAG_ERROR,
    TAG_METHOD,
    TAG_OPTIMIZER,
    TAG_PARENT,
    TAG_WITHDRAWN_VERDICT,
)
from workbench.spec.run_spec import RunSpec
from workbench.tracking.conventions import (
    check_status,
    chunks,
    one_line,
    record_error,
    truncate,
    valid_key,
)
from workbench.tracking.naming import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, default_run_name

# How hard MLflow's HTTP client tries before giving up. Its defaults (7 retries, backoff
# factor 2) keep a call to a stopped server retrying for about four minutes; a workbench talks
# to a server on the same machine, so a few seconds is enough. Set only when the user has not.
_HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


# -- connecting ------------------------------------------------------------------------------


def connect(uri: str | None = None, *, probe_timeout_s: float = 5.0) -> MlflowClient:
    """A client for the store that :func:`workbench.spec.paths.tracking_uri` picks for ``uri``.

    A local sqlite store gets its folder created. An http(s) server is probed once with a
    short timeout, so a stopped server fails in seconds with :class:`TrackingError` instead of
    MLflow retrying for minutes. Unless the user set them, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
    and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` are lowered for the whole process for the same
    reason (a server that dies mid-run fails a flush in about 3 s, and the recorder retries).
    """
    resolved = paths.tracking_uri(uri)
    quiet_store_loggers()
    first_open = contextlib.nullcontext()
    if resolved.startswith("sqlite:///"):
        db = Path(resolved[len("sqlite:///") :])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(
                f"cannot create the folder of the MLflow store {resolved}: {err}; "
                "point MLFLOW_TRACKING_URI at a writable location"
            ) from None
        # MLflow creates a new store's schema in steps that collide when two processes
        # open the same new database at once (two runs launched together on a fresh
        # mlruns/: "table _alembic_tmp_experiments already exists"); one opens it at a time.
        first_open = FileLock(f"{db}.lock")
    elif resolved.startswith(("http://", "https://")):
        for name, value in _HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(name, value)
        _probe_server(resolved, probe_timeout_s)
    try:
        # MLflow 3.17's sqlalchemy store uses a loader strategy SQLAlchemy deprecates.
        with ignoring_warning(".*noload.*"), first_open:
            client = MlflowClient(tracking_uri=resolved)
            if resolved.startswith("sqlite:"):
                # Opening the store creates or migrates the schema; fail here, not mid-run.
                client.search_experiments(max_results=1)
    except MlflowException as err:
        raise TrackingError(
            f"cannot open the MLflow store {resolved}: {one_line(err)}; use a sqlite URI "
            "(sqlite:///path/to/mlflow.db), a running server (`workbench ui`), or unset "
            "MLFLOW_TRACKING_URI to use the local store"
        ) from None
    return client


def _probe_server(uri: str, timeout_s: float) -> None:
    """One request, no retries: raise TrackingError unless an MLflow server answers."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    fix = "start it with `workbench ui` or unset MLFLOW_TRACKING_URI to use the local store"
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "POST",
            json={"max_results": 1},
            max_retries=0,
            backoff_factor=0,
            backoff_jitter=0,
            timeout=timeout_s,
        )
    except Exception as err:
        raise TrackingError(
            f"cannot reach the MLflow server at {uri}: {one_line(err)}; {fix}"
        ) from None
    if response.status_code != 200:
        raise TrackingError(
            f"the MLflow server at {uri} answered HTTP {response.status_code} "
            f"({response.text[:200].strip()!r}); check the URI and credentials, or {fix}"
        )


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (or restored, if deleted) when needed.

    In a local sqlite store a new experiment keeps its artifacts next to ``mlflow.db``
    (``artifacts/<run id>/artifacts/...``: MLflow puts run folders straight under the
    experiment's location), never under the working folder. Every experiment it returns is
    marked as model development (:data:`~workbench.tracking.naming.EXPERIMENT_KIND_TAG`), so
    MLflow's UI treats it as one of training runs, not of GenAI traces.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        if EXPERIMENT_KIND_TAG not in found.tags:
            # Made before the workbench marked its experiments; a kind someone chose is kept.
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    try:
        return client.create_experiment(
            name,
            artifact_location=paths.artifact_root(client.tracking_uri),
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )
    except MlflowException:
        # Another process created it between our look-up and create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# -- starting and ending runs ----------------------------------------------------------------


def start_run(
    client: MlflowClient,
    spec: RunSpec,
    *,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str:
    """Create the run for ``spec``: tags, the spec as params and as ``spec.yaml``. Returns its id.

    With ``parent_run_id`` the run is a child (tag ``workbench.parent`` and MLflow's own
    ``mlflow.parentRunId``, so the UI nests it under its sweep). It is named
    ``tracking.run_name``, else after its method, data and weights
    (:func:`~workbench.tracking.naming.default_run_name`) instead of MLflow's random name.
    """
    experiment_id = ensure_experiment(client, spec.tracking.experiment)
    tags: dict[str, str] = {
        TAG_METHOD: spec.method.name,
        TAG_ADAPTER: spec.adapter.name,
        TAG_OPTIMIZER: spec.optimizer.name,
    }
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    if os.environ.get(AUTHOR_ENV, "").strip():
        tags[TAG_AUTHOR] = os.environ[AUTHOR_ENV].strip()
    tags.update(spec.tracking.tags)
    tags.update(extra_tags or {})
    tags = {valid_key(k): truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
    run_name = spec.tracking.run_name or default_run_name(spec)
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    run_id = run.info.run_id
    params = [
        Param(valid_key(k), truncate(v, MAX_PARAM_VAL_LENGTH))
        for k, v in spec.flat_params().items()
    ]
    for chunk in chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk, synchronous=True)
    client.log_text(run_id, spec.to_yaml(), SPEC_ARTIFACT)
    return run_id


def end_run(client: MlflowClient, run_id: str, status: str, error: str | None = None) -> None:
    """Mark a run ended from outside (e.g. its launched process died), with the error if any."""
    check_status(status)
    if error:
        record_error(client, run_id, error, details=error)
    client.set_terminated(run_id, status)


def declare_dead(client: MlflowClient, run_id: str, reason: str) -> None:
    """End a run FAILED from outside because its process is gone, saying why.

    The verdict is marked as one (``DECLARED_DEAD_TAG``), so a process that was in fact alive
    can take it back (:func:`withdraw_dead_verdict`) and end its run as it really ends.
    """
    # In this order: the live process looks for the verdict's tag and, finding it, reopens a
    # run that is not RUNNING; tagged before the run ended, it could reopen a run still
    # RUNNING and then see it end FAILED with no tag left to take back.
    client.set_tag(run_id, TAG_ERROR, truncate(reason, MAX_TAG_VAL_LENGTH))
    client.set_terminated(run_id, "FAILED")
    client.set_tag(run_id, DECLARED_DEAD_TAG, f"{time.time():.3f}")


def withdraw_dead_verdict(
    client: MlflowClient, run_id: str, *, reopen: bool, why: str = "the process was alive"
) -> bool:
    """Take back a :func:`declare_dead` verdict on a run whose process is alive after all.

    Called by that process itself (or by a resume, ``why`` saying so): the error tag goes (its
    text is kept under ``TAG_WITHDRAWN_VERDICT``), and with ``reopen`` the run is RUNNING again.
    A run with no such verdict, or one that failed for a real error, is left alone. True if a
    verdict was withdrawn.
    """
    run = client.get_run(run_id)
    tags = run.data.tags
    if DECLARED_DEAD_TAG not in tags:
        return False
    client.set_tag(
        run_id,
        TAG_WITHDRAWN_VERDICT,
        truncate(f"{tags.get(TAG_ERROR, 'declared dead')} (withdrawn: {why})", MAX_TAG_VAL_LENGTH),
    )
    for key in (TAG_ERROR, DECLARED_DEAD_TAG):
        if key in tags:
            client.delete_tag(run_id, key)
    if reopen and run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return True
