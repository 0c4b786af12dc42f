"""User datasets in TRL's formats, loaded into the row types of :mod:`workbench.data.rows`.

A data source is a file (``.jsonl``/``.json``: JSON lines or one JSON list of rows;
``.csv``; ``.parquet``), a directory (one written by ``datasets``' ``save_to_disk``, or a
folder of data files that ``datasets.load_dataset`` understands) or a Hugging Face
``datasets`` name. Built-in task names are resolved before this module is reached.

The format is detected once per dataset, from its columns (see :data:`FORMATS`):

- ``prompt`` + ``completion`` (format ``prompt_completion``) -> :class:`Row` with one
  ``answer`` segment; with an ``explanation`` column too, segments ``answer`` then
  ``explanation``.
- ``messages``, a list of ``{"role", "content"}`` with roles system/user/assistant and at
  least one assistant turn (format ``chat``) -> :class:`ChatRow`. Text-only files (CSV)
  may hold the list as JSON text.
- ``prompt`` + ``chosen`` + ``rejected``, all text (format ``preference``) ->
  :class:`PreferenceRow`.

Other columns are ignored. With an ``explanation`` column the completion is the answer
followed by the explanation, joined as they are (no separator is added), so an
explanation usually starts with its own space or newline.

Every problem the user can fix ends in a :class:`~workbench.spec.errors.DataError` naming the
source, the row and the field: row numbers are 1-based; in JSON lines files the row number
is the line number (blank lines are skipped but counted); in CSV files it counts data rows
after the header, and the message adds the line in the file. Nothing from inside
``json``, ``csv``, ``pyarrow`` or ``datasets`` reaches the caller as a raw traceback.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.data.file_readers import read_csv_file, read_json_file, read_parquet_file
from workbench.data.hub_datasets import load_with_datasets
from workbench.data.records import (
    ACCEPTED_SOURCES,
    FILE_SUFFIXES,
    HUB_ID,
    AnyRow,
    Record,
    T,
    Table,
    describe_value,
    looks_like_path,
    rows_from_table,
    union_of_keys,
)
from workbench.spec.errors import DataError

# ---------------------------------------------------------------------------------------
# Public API


def load_dataset_rows(
    source: str | os.PathLike[str], *, split: str = "train", max_rows: int | None = None
) -> list[AnyRow]:
    """Load a user dataset as :class:`Row`, :class:`ChatRow` or :class:`PreferenceRow` rows.

    ``source`` is a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a directory (written by
    ``datasets``' ``save_to_disk``, or holding data files ``datasets.load_dataset`` reads)
    or a Hugging Face ``datasets`` name. ``split`` picks the split of a directory or a
    datasets name (a single saved ``Dataset`` has none; files have none). ``max_rows``
    keeps the first rows only (the rest are not read or checked).

    Raises :class:`DataError` naming the source, row and field of the first problem.
    """
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1
    ):
        raise DataError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if not isinstance(name, str) or not name.strip():
        raise DataError(
            f"a data source must be a non-empty string, got {source!r}; accepted: "
            f"{ACCEPTED_SOURCES}"
        )
    path = Path(name).expanduser()

    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            table = read_json_file(path, name, max_rows)
        elif suffix == ".csv":
            table = read_csv_file(path, name, max_rows)
        elif suffix == ".parquet":
            table = read_parquet_file(path, name, max_rows)
        else:
            raise DataError(
                f"unsupported file type '{path.suffix or '(no suffix)'}'; accepted: "
                f"{ACCEPTED_SOURCES}",
                source=name,
            )
        return rows_from_table(table, name)

    if path.is_dir():
        return load_with_datasets(name, path, split, max_rows, local=True)

    if path.suffix.lower() in FILE_SUFFIXES or looks_like_path(name) or not HUB_ID.match(name):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(
            f"no such file or directory{where}; a data source is {ACCEPTED_SOURCES}",
            source=name,
        )
    return load_with_datasets(name, path, split, max_rows, local=False)


def rows_from_records(records: Iterable[Mapping[str, Any]], *, source: str) -> list[AnyRow]:
    """Turn in-memory records (dicts, numbered from 1) into rows, checked like a file."""
    numbered: list[Record] = []
    for i, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise DataError(
                f"must be a mapping of column to value, got {describe_value(record)}",
                source=source,
                row=i,
            )
        numbered.append(Record(i, record))
    return rows_from_table(Table(union_of_keys(numbered), numbered), source)


def split_rows(rows: Sequence[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic seeded shuffle-split into ``(train, eval)``.

    ``eval`` holds ``round(len(rows) * eval_fraction)`` rows, clamped so both parts keep
    at least one row. The same rows, fraction and seed always give the same split.
    """
    if not 0 < eval_fraction < 1:
        raise DataError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    n = len(rows)
    if n < 2:
        raise DataError(f"a dataset needs at least 2 rows to hold one out for evaluation, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    eval_rows = [rows[i] for i in order[:n_eval]]
    train_rows = [rows[i] for i in order[n_eval:]]
    return train_rows, eval_rows
