"""Small helpers every part of tracking shares: the checks MLflow's limits need (key names,
value lengths), recording an error, end statuses. The names themselves are :mod:`.names`."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (  # noqa: F401  (MAX_PARAM_VAL_LENGTH: tracking's public limit)
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    bad_character_message,
    bad_path_message,
    path_not_unique,
    validate_param_and_metric_name,
)

from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import END_STATUSES, ERROR_ARTIFACT, TAG_ERROR


def record_error(client: MlflowClient, run_id: str, error: str, *, details: str) -> None:
    client.set_tag(run_id, TAG_ERROR, truncate(error, MAX_TAG_VAL_LENGTH))
    client.log_text(run_id, details, ERROR_ARTIFACT)


def check_status(status: str, *, allow_running: bool = False) -> None:
    allowed = END_STATUSES + (("RUNNING", "SCHEDULED") if allow_running else ())
    if status not in allowed:
        raise ValueError(f"status must be one of {', '.join(allowed)}, not {status!r}")


def truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    marker = " ... [truncated] ... "
    head = (limit - len(marker)) // 2
    tail = limit - len(marker) - head
    return value[:head] + marker + value[-tail:]


@functools.lru_cache(maxsize=4096)
def valid_key(key: str) -> str:
    """``key`` if MLflow accepts it as a metric, param or tag name, else TrackingError.

    Checked on the caller's thread (once per distinct key), so a bad name fails where it is
    logged instead of making every later batch fail in the background.
    """
    key = str(key)
    if len(key) > MAX_ENTITY_KEY_LENGTH:
        raise TrackingError(
            f"MLflow key '{key[:60]}...' is {len(key)} characters; MLflow allows "
            f"{MAX_ENTITY_KEY_LENGTH}"
        )
    if not validate_param_and_metric_name(key):
        raise TrackingError(f"MLflow rejects the key {key!r}: {bad_character_message()}")
    if path_not_unique(key):
        raise TrackingError(f"MLflow rejects the key {key!r}: {bad_path_message(key)}")
    return key


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
