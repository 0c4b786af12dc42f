"""Turn a DataSpec into training and held-out rows (built-in task or user dataset)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from workbench.data.formats import FILE_SUFFIXES, load_dataset_rows, split_rows
from workbench.data.pairs import preference_pairs, scored_pairs
from workbench.data.rows import PreferenceRow
from workbench.data.tasks import METRICS, TASKS
from workbench.errors import DataError

# A Hugging Face dataset id: owner/name (letters, digits, '-', '_', '.').
HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def source_kind(source: str) -> str:
    """What ``data.source`` names, judged from its form: ``"task"``, ``"path"`` or ``"hub"``.

    A built-in task name, an existing file or folder, anything shaped like a path (a data
    file suffix, a leading ``.``/``~``/``/``, two or more separators) or a hub dataset id
    ``owner/name``. Anything else, e.g. a mistyped task name, raises ``ValueError`` naming
    the built-in tasks and the closest one, so it never reaches a dataset hub. No file is
    opened; whether a path exists is :func:`missing_source`'s question.
    """
    if source in TASKS:
        return "task"
    path = Path(source).expanduser()
    if path.exists() or looks_like_path(source):
        return "path"
    if HUB_DATASET_ID.match(source):
        return "hub"
    close = difflib.get_close_matches(source, list(TASKS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(
        f"unknown data source '{source}': {hint}The built-in tasks are {', '.join(TASKS)}; "
        f"a file needs its suffix ({'/'.join(FILE_SUFFIXES)}) and a Hugging Face dataset its "
        "owner/name id"
    )


def looks_like_path(source: str) -> bool:
    """A file or folder name rather than a task name or a hub id ``owner/name``."""
    return (
        Path(source).suffix.lower() in FILE_SUFFIXES
        or source.startswith((".", "~", "/", "\\"))
        or os.path.isabs(source)
        or "\\" in source
        or source.count("/") >= 2
    )


def missing_source(source: str) -> str | None:
    """Why a path-shaped ``data.source`` cannot be read on this machine, or None."""
    if source_kind(source) != "path":
        return None
    path = Path(source).expanduser()
    if path.exists():
        return None
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return (f"file not found: no file or folder '{source}'{where}; a data source is a built-in "
            f"task ({', '.join(TASKS)}), a .jsonl/.json/.csv/.parquet file or folder, or a "
            "Hugging Face dataset id owner/name")


def load_rows(data_spec, seed: int, *, row_kind: str = "supervised"):
    """(train_rows, eval_rows) for ``data_spec`` as the ``row_kind`` a method trains on
    (``registry.ROW_KINDS``); raises DataError before anything is written.

    Built-in tasks give supervised rows, and preference pairs (a corrupted answer as the
    rejected completion, :mod:`workbench.data.pairs`) for pair-based kinds; for
    ``scored_preference``, pairs scored by each of the task's objectives (``scored_pairs``).
    """
    task = TASKS.get(data_spec.source)
    if task is not None:
        train, held_out = task.splits(data_spec.train_size, data_spec.eval_size, seed)
        if row_kind == "scored_preference":
            scorers = [(o.name, o.direction, METRICS[o.metric]) for o in task.objectives]
            return scored_pairs(train, scorers, seed), scored_pairs(held_out, scorers, seed)
        if row_kind in ("preference", "unpaired"):
            train, held_out = preference_pairs(train, seed), preference_pairs(held_out, seed)
        return train, held_out
    rows = load_dataset_rows(data_spec.source, split=data_spec.split)
    pairs = [isinstance(r, PreferenceRow) for r in rows]
    if row_kind == "supervised" and any(pairs):
        raise DataError(
            "has prompt/chosen/rejected (preference) rows; SFT methods need prompt/completion or "
            "messages rows. Choose a preference method, or supply completions",
            source=data_spec.source,
        )
    if row_kind in ("preference", "scored_preference") and not all(pairs):
        raise DataError(
            f"row {pairs.index(False)} is not a prompt/chosen/rejected pair; preference methods "
            "need every row to have prompt, chosen and rejected",
            source=data_spec.source,
        )
    if row_kind == "scored_preference":
        unscored = next((i for i, r in enumerate(rows) if not r.scores), None)
        if unscored is not None:
            raise DataError(
                f"row {unscored} has no per-attribute scores; this method weights score "
                "differences, so give every row 'chosen_scores' and 'rejected_scores' "
                "(objects mapping each attribute to a number, higher or lower as its objective's "
                "direction says)",
                source=data_spec.source,
            )
    train, held_out = split_rows(rows, data_spec.eval_fraction, seed)
    return train[: data_spec.train_size], held_out[: data_spec.eval_size]
