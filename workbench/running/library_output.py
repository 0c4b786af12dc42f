"""Keeping other libraries' chatter out of a run's output.

Lightning prints device banners and tips, transformers draws progress bars while loading and
saving weights, and both warn about their own deprecations: in a notebook cell or a CLI log
they bury the workbench's own lines. :func:`quiet_libraries` hides them while a run trains
and restores every setting afterwards, so a user's own logging is left as it was. Errors and
the workbench's own warnings still show.
"""

from __future__ import annotations

import logging
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
)


def quiet_loggers() -> None:
    """Set the chatty libraries' loggers to errors only (for good: the CLI's setting)."""
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


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
