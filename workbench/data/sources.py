"""Turn a DataSpec into training and held-out rows (built-in task or user dataset)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from workbench.data.corruption import corrupt_labels
from workbench.data.formats import load_dataset_rows, split_rows
from workbench.data.mixture import MIXTURE_SOURCE, mixture_rows
from workbench.data.pairs import preference_pairs, scored_pairs
from workbench.data.records import FILE_SUFFIXES
from workbench.data.rows import PreferenceRow
from workbench.data.tasks import METRICS, TASKS
from workbench.spec import registry
from workbench.spec.errors import DataError

# A Hugging Face dataset id: owner/name (letters, digits, '-', '_', '.').
HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def source_kind(source: str) -> str:
    """What ``data.source`` names, judged from its form: ``"task"``, ``"mixture"``,
    ``"path"`` or ``"hub"``.

    A built-in task name, ``mixture`` (the tasks of ``data.mixture``), an existing file or
    folder, anything shaped like a path (a data file suffix, a leading ``.``/``~``/``/``, two
    or more separators) or a hub dataset id
    ``owner/name``. Anything else, e.g. a mistyped task name, raises ``ValueError`` naming
    the built-in tasks and the closest one, so it never reaches a dataset hub. No file is
    opened; whether a path exists is :func:`missing_source`'s question.
    """
    if source in TASKS:
        return "task"
    if source == MIXTURE_SOURCE:
        return "mixture"
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
    return (
        f"file not found: no file or folder '{source}'{where}; a data source is a built-in "
        f"task ({', '.join(TASKS)}), a .jsonl/.json/.csv/.parquet file or folder, or a "
        "Hugging Face dataset id owner/name"
    )


def load_rows(data_spec, seed: int, *, row_kind: str = "supervised"):
    """(train_rows, eval_rows) for ``data_spec`` as the ``row_kind`` a method trains on
    (``registry.ROW_KINDS``); raises DataError before anything is written.

    A built-in task's rows become the kind's rows through the kind's ``from_task`` (e.g.
    preference pairs with a corrupted answer as the rejected completion); a user file's rows
    are checked by the kind's ``check_rows``. ``data.corrupt_fraction`` corrupts that share of
    a task's training answers first (:mod:`workbench.data.corruption`). A mixture of tasks
    (``data.mixture``) is :func:`mixture_rows`.
    """
    kind = registry.ROW_KINDS[row_kind]
    if data_spec.mixture is not None:
        return mixture_rows(data_spec, seed, kind)
    task = TASKS.get(data_spec.source)
    if task is not None:
        train, held_out = task.splits(data_spec.train_size, data_spec.eval_size, seed)
        if data_spec.corrupt_fraction:
            train = corrupt_labels(train, data_spec.corrupt_fraction, seed)
        return registry.resolve(kind.from_task)(task, train, held_out, seed)
    rows = load_dataset_rows(data_spec.source, split=data_spec.split)
    registry.resolve(kind.check_rows)(rows, data_spec.source)
    train, held_out = split_rows(rows, data_spec.eval_fraction, seed)
    return train[: data_spec.train_size], held_out[: data_spec.eval_size]


# -- what each row kind makes of a built-in task's rows (registry.RowKind.from_task) ----------


def task_rows_as_they_are(task, train, held_out, seed):
    return train, held_out


def task_pairs(task, train, held_out, seed):
    """Preference pairs: the correct completion against a corrupted one."""
    return preference_pairs(train, seed), preference_pairs(held_out, seed)


def task_scored_pairs(task, train, held_out, seed):
    """Pairs scored by each of the task's objectives (:func:`scored_pairs`)."""
    scorers = [(o.name, o.direction, METRICS[o.metric]) for o in task.objectives]
    return scored_pairs(train, scorers, seed), scored_pairs(held_out, scorers, seed)


# -- what each row kind accepts from a user's file (registry.RowKind.check_rows) -------------


def check_any_rows(rows, source) -> None:
    """Every row type is usable (unpaired and prompt-only kinds take any)."""


def check_no_pairs(rows, source) -> None:
    if any(isinstance(r, PreferenceRow) for r in rows):
        raise DataError(
            "has prompt/chosen/rejected (preference) rows; SFT methods need prompt/completion or "
            "messages rows. Choose a preference method, or supply completions",
            source=source,
        )


def check_pairs(rows, source) -> None:
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, PreferenceRow)), None)
    if bad is not None:
        raise DataError(
            f"row {bad} is not a prompt/chosen/rejected pair; preference methods "
            "need every row to have prompt, chosen and rejected",
            source=source,
        )


def check_scored_pairs(rows, source) -> None:
    check_pairs(rows, source)
    unscored = next((i for i, r in enumerate(rows) if not r.scores), None)
    if unscored is not None:
        raise DataError(
            f"row {unscored} has no per-attribute scores; this method weights score "
            "differences, so give every row 'chosen_scores' and 'rejected_scores' "
            "(objects mapping each attribute to a number, higher or lower as its objective's "
            "direction says)",
            source=source,
        )
