"""Keeping other libraries' chatter out of a run's output.

Lightning prints device banners and tips, transformers draws progress bars while loading and
saving weights, and both warn about their own deprecations: in a notebook cell or a CLI log
they bury the workbench's own lines. :func:`quiet_libraries` hides them while a run trains
and restores every setting afterwards, so a user's own logging is left as it was. Errors and
the workbench's own warnings still show.

This is the one place that quiets other libraries: the CLI, which owns its process, quiets
them for good with :func:`quiet_process` (or only the loggers, :func:`quiet_loggers`, where
no training library is imported); the store's connection quiets MLflow's database loggers
with :func:`quiet_store_loggers`; a call that trips one known library warning is wrapped in
:func:`ignoring_warning`, an artifact download in :func:`no_download_bars`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

LOGGERS = (
    "lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero", "pytorch_lightning", "mlflow", "alembic", "httpx",
    "transformers",
)  # fmt: skip

# Warnings of libraries about themselves, not about the user's run.
_IGNORED_WARNINGS = (
    # tqdm.auto without ipywidgets (the workbench draws no notebook progress bar)
    {"message": "IProgress not found"},
    # lightning's own use of a deprecated torch pytree API
    {"message": r".*isinstance\(treespec, LeafSpec\)"},
    # peft (and trl) probe a transformers model's deprecated `is_gradient_checkpointing`
    # property when they wrap or unwrap it: transformers warns at the library's call, which
    # the user cannot change. Only this deprecation: other FutureWarnings still show.
    {"message": r"`is_gradient_checkpointing` is deprecated", "category": FutureWarning},
    # Our batch sampler positions itself at the checkpoint's step (GlobalBatchSampler), which
    # Lightning cannot see; its "dataloader is not resumable" warning does not apply.
    {"message": ".*resuming from a checkpoint that ended before the epoch ended.*"},
)


# Loggers that print on every first use of a sqlite store (schema creation and migrations).
STORE_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")

# Progress bars and verbosity of the libraries, set through their environment variables.
_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts"
}


def quiet_loggers() -> None:
    """Set the chatty libraries' loggers to errors only (for good: the CLI's setting)."""
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_store_loggers() -> None:
    """MLflow's database layers at warnings and above (connecting to a store logs at INFO)."""
    for name in STORE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_process() -> None:
    """Quiet the libraries for the rest of this process (the CLI's setting, where the
    process is the workbench's own): their environment variables unless the user set them,
    their loggers at errors only, and their deprecation chatter hidden. The workbench's own
    RuntimeWarnings (e.g. where unsent metrics were saved) stay visible."""
    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import lightning  # noqa: F401  (it sets its loggers' levels on import; ours must come after)

    quiet_loggers()
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


@contextmanager
def no_download_bars() -> Iterator[None]:
    """Within the block: no MLflow progress bar per artifact download; the environment
    variable that says so is restored on exit."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def ignoring_warning(message: str) -> Iterator[None]:
    """Within the block: warnings whose message matches ``message`` (a regular expression)
    are hidden; a library's warning about its own code, at a call the user cannot change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message)
        yield


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block: chatty loggers at errors only, no transformers progress bars, no
    library self-warnings. Restored on exit."""
    with warnings.catch_warnings():
        for rule in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", **rule)
        import lightning  # noqa: F401  (it sets its loggers' levels on import; ours come after)
        from transformers.utils import logging as hf_logging

        levels = {name: logging.getLogger(name).level for name in LOGGERS}
        bars = hf_logging.is_progress_bar_enabled()
        quiet_loggers()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if bars:
                hf_logging.enable_progress_bar()
