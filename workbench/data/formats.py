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

Every problem the user can fix ends in a :class:`~workbench.errors.DataError` naming the
source, the row and the field: row numbers are 1-based; in JSON lines files the row number
is the line number (blank lines are skipped but counted); in CSV files it counts data rows
after the header, and the message adds the line in the file. Nothing from inside
``json``, ``csv``, ``pyarrow`` or ``datasets`` reaches the caller as a raw traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.errors import DataError

AnyRow = Row | ChatRow | PreferenceRow
T = TypeVar("T")

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant")

ACCEPTED_SOURCES = (
    "a built-in task name, a .jsonl/.json/.csv/.parquet file, a directory written by "
    "datasets' save_to_disk or holding such files, or a Hugging Face datasets name"
)
ACCEPTED_COLUMNS = (
    "'prompt' + 'completion' (optionally 'explanation'), "
    "'messages' (a list of {role, content} with roles system/user/assistant), "
    "or 'prompt' + 'chosen' + 'rejected'"
)

# A Hugging Face repo id: "name" or "owner/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_MISSING = object()  # a field absent from a row (distinct from a null value)


@dataclass(frozen=True)
class DatasetFormat:
    """One of the accepted dataset formats, recognised by its required columns."""

    name: str
    columns: tuple[str, ...]  # required
    optional: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join(f"'{c}'" for c in self.columns)


PROMPT_COMPLETION = DatasetFormat("prompt_completion", ("prompt", "completion"), ("explanation",))
CHAT = DatasetFormat("chat", ("messages",))
PREFERENCE = DatasetFormat("preference", ("prompt", "chosen", "rejected"))
FORMATS: tuple[DatasetFormat, ...] = (PROMPT_COMPLETION, CHAT, PREFERENCE)


class _Record(NamedTuple):
    row: int  # 1-based row number reported to the user
    values: Mapping[str, Any]
    note: str = ""  # appended to messages, e.g. " (line 7 of the file)"


class _Table(NamedTuple):
    columns: list[str]
    records: list[_Record]


class _RowProblem(Exception):
    """A malformed value; the caller adds the source and the row number."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field, self.message = field, message


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
            table = _read_json_file(path, name, max_rows)
        elif suffix == ".csv":
            table = _read_csv_file(path, name, max_rows)
        elif suffix == ".parquet":
            table = _read_parquet_file(path, name, max_rows)
        else:
            raise DataError(
                f"unsupported file type '{path.suffix or '(no suffix)'}'; accepted: "
                f"{ACCEPTED_SOURCES}",
                source=name,
            )
        return _rows_from_table(table, name)

    if path.is_dir():
        return _load_with_datasets(name, path, split, max_rows, local=True)

    if path.suffix.lower() in FILE_SUFFIXES or _looks_like_path(name) or not _HUB_ID.match(name):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(
            f"no such file or directory{where}; a data source is {ACCEPTED_SOURCES}",
            source=name,
        )
    return _load_with_datasets(name, path, split, max_rows, local=False)


def rows_from_records(records: Iterable[Mapping[str, Any]], *, source: str) -> list[AnyRow]:
    """Turn in-memory records (dicts, numbered from 1) into rows, checked like a file."""
    numbered: list[_Record] = []
    for i, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise DataError(
                f"must be a mapping of column to value, got {_describe(record)}",
                source=source,
                row=i,
            )
        numbered.append(_Record(i, record))
    return _rows_from_table(_Table(_union_of_keys(numbered), numbered), source)


def detect_format(columns: Iterable[str], *, source: str | None = None) -> DatasetFormat:
    """The format whose required columns are all present; DataError if none or several."""
    found = [str(c) for c in columns]
    present = set(found)
    matches = [f for f in FORMATS if set(f.columns) <= present]
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(f"'{c}'" for c in found[:20])
    if len(found) > 20:
        shown += f" and {len(found) - 20} more"
    found_text = f"in columns {shown}" if found else "(the rows have no fields)"
    if matches:
        labels = " and ".join(f"{f.name} ({f.label})" for f in matches)
        raise DataError(
            f"the columns ({shown}) fit more than one format: {labels}; keep only the "
            f"columns of the format you mean",
            source=source,
        )
    hints = []
    if present == {"text"}:
        hints.append(
            "a lone 'text' column (TRL's language-modelling format) is not supported, "
            "since training needs to know which tokens are the prompt"
        )
    for f in FORMATS:
        have = [c for c in f.columns if c in present]
        missing = [c for c in f.columns if c not in present]
        if have and missing:
            hints.append(f"for the {f.name} format, add {' and '.join(repr(c) for c in missing)}")
    hint = ("; " + "; ".join(hints)) if hints else ""
    raise DataError(
        f"no recognised dataset format {found_text}; accepted: {ACCEPTED_COLUMNS}{hint}",
        source=source,
    )


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


# ---------------------------------------------------------------------------------------
# Rows from records


def _rows_from_table(table: _Table, source: str) -> list[AnyRow]:
    if not table.records:
        raise DataError("has no rows", source=source)
    try:
        fmt = detect_format(table.columns, source=source)
    except DataError:
        _raise_if_mixed_formats(table.records, source)
        raise
    with_explanation = "explanation" in table.columns
    rows: list[AnyRow] = []
    for record in table.records:
        try:
            if fmt is PROMPT_COMPLETION:
                rows.append(_plain_row(record.values, with_explanation))
            elif fmt is CHAT:
                rows.append(_chat_row(record.values))
            else:
                rows.append(_pref_row(record.values))
        except _RowProblem as problem:
            raise DataError(
                problem.message + record.note, source=source, row=record.row, field=problem.field
            ) from None
    return rows


def _raise_if_mixed_formats(records: list[_Record], source: str) -> None:
    """When the union of columns is ambiguous, name the first row that switches format."""
    first: tuple[_Record, DatasetFormat] | None = None
    for record in records:
        keys = set(record.values)
        matches = [f for f in FORMATS if set(f.columns) <= keys]
        if len(matches) > 1:
            labels = " and ".join(f"{f.name} ({f.label})" for f in matches)
            raise DataError(
                f"the row fits more than one format: {labels}; keep only the fields of "
                f"the format you mean{record.note}",
                source=source,
                row=record.row,
            )
        if len(matches) == 1:
            if first is None:
                first = (record, matches[0])
            elif matches[0] is not first[1]:
                fmt = matches[0]
                field = next(c for c in fmt.columns if c not in first[1].columns)
                raise DataError(
                    f"this row is in the {fmt.name} format ({fmt.label}) but row "
                    f"{first[0].row} is in the {first[1].name} format ({first[1].label}); "
                    f"a dataset uses one format{record.note}",
                    source=source,
                    row=record.row,
                    field=field,
                )


def _plain_row(values: Mapping[str, Any], with_explanation: bool = False) -> Row:
    prompt = _text(values, "prompt")
    completion = _text(values, "completion")
    if not with_explanation:
        return Row.plain(prompt, completion)
    explanation = _text(values, "explanation")
    return Row(prompt, (("answer", completion), ("explanation", explanation)))


def _pref_row(values: Mapping[str, Any]) -> PreferenceRow:
    for name in ("chosen", "rejected"):
        value = values.get(name)
        if isinstance(value, (list, tuple)):
            raise _RowProblem(
                name,
                f"must be a string, got {_describe(value)}; conversational preference data "
                f"(lists of messages) is not supported, so give the prompt and the two "
                f"answers as text",
            )
    return PreferenceRow(
        _text(values, "prompt"),
        _text(values, "chosen"),
        _text(values, "rejected"),
    )


def _chat_row(values: Mapping[str, Any]) -> ChatRow:
    shape = 'a list of {"role": ..., "content": ...} objects'
    value = values.get("messages", _MISSING)
    if value is _MISSING:
        raise _RowProblem("messages", f"is missing; every row needs 'messages', {shape}")
    if isinstance(value, str) and value.lstrip().startswith("["):
        # Text-only files (CSV) can hold the list only as JSON text.
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise _RowProblem("messages", f"is not valid JSON ({exc}); write {shape}") from None
    if not isinstance(value, (list, tuple)):
        raise _RowProblem("messages", f"must be {shape}, got {_describe(value)}")
    if not value:
        raise _RowProblem("messages", f"is an empty list; write {shape}")
    messages = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise _RowProblem(
                where, f"must be an object with 'role' and 'content', got {_describe(item)}"
            )
        for key in ("role", "content"):
            if key not in item:
                raise _RowProblem(
                    f"{where}.{key}", "is missing; each message needs 'role' and 'content'"
                )
        role, content = item["role"], item["content"]
        if not isinstance(role, str):
            raise _RowProblem(f"{where}.role", f"must be a string, got {_describe(role)}")
        if role not in ROLES:
            raise _RowProblem(
                f"{where}.role",
                f"unknown role {_short(role)!r}; the roles are {', '.join(ROLES)}",
            )
        if not isinstance(content, str):
            raise _RowProblem(f"{where}.content", f"must be a string, got {_describe(content)}")
        _check_encodable(content, f"{where}.content")
        if role == "assistant" and not content.strip():
            raise _RowProblem(f"{where}.content", "is empty; an assistant turn needs text to learn")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise _RowProblem(
            "messages", "has no assistant turn; a chat row needs at least one to train on"
        )
    return ChatRow(tuple(messages))


def _text(values: Mapping[str, Any], name: str) -> str:
    value = values.get(name, _MISSING)
    if value is _MISSING:
        raise _RowProblem(name, f"is missing; every row of this dataset needs {name!r}")
    if not isinstance(value, str):
        hint = "; write it as a string" if isinstance(value, (int, float)) else ""
        raise _RowProblem(name, f"must be a string, got {_describe(value)}{hint}")
    if not value.strip():
        raise _RowProblem(name, "is empty; every row needs a non-empty " + name)
    _check_encodable(value, name)
    return value


def _check_encodable(text: str, field: str) -> None:
    # JSON may smuggle in lone UTF-16 surrogates ("\ud800"), which tokenizers refuse later.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _RowProblem(
            field,
            f"contains an unpaired surrogate character at position {exc.start}; "
            f"re-encode the text as UTF-8",
        ) from None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        try:
            return f"a number ({_short(repr(value))})"
        except ValueError:  # an int too long to print
            return "a number"
    if isinstance(value, str):
        return f"a string ({_short(value)!r})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, Mapping):
        return "an object"
    return f"a value of type {type(value).__name__}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _union_of_keys(records: Iterable[_Record]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for key in record.values:
            seen.setdefault(str(key), None)
    return list(seen)


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in name
        or os.path.isabs(name)
    )


# ---------------------------------------------------------------------------------------
# Readers: each returns the columns and numbered records of one file or split


def _utf8_problem(data: bytes, exc: UnicodeDecodeError) -> tuple[int, str]:
    """(1-based line, message) for bytes that are not UTF-8."""
    line = data.count(b"\n", 0, exc.start) + 1
    bad = data[exc.start : exc.start + 1].hex()
    return line, (
        f"is not valid UTF-8 (byte 0x{bad} at byte offset {exc.start}); save the file "
        f"with UTF-8 encoding"
    )


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot be read: {exc.strerror or exc}", source=source) from None


def _read_json_file(path: Path, source: str, max_rows: int | None) -> _Table:
    data = _read_bytes(path, source)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip()[:1] == b"[":
        return _read_json_list(data, source, max_rows)
    return _read_json_lines(data, source, max_rows)


def _read_json_list(data: bytes, source: str, max_rows: int | None) -> _Table:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, message = _utf8_problem(data, exc)
        raise DataError(f"line {line} {message}", source=source) from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; a .json "
            f"file holds one JSON list of row objects, or one row object per line",
            source=source,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(
            f"cannot be parsed as JSON: {_short(str(exc), 120)}", source=source
        ) from None
    if not isinstance(items, list):  # "[1] [2]" style content never gets here; be safe
        raise DataError("must hold a JSON list of row objects", source=source)
    if max_rows is not None:
        items = items[:max_rows]
    records = []
    for i, item in enumerate(items, start=1):
        records.append(_json_record(item, source, i))
    return _Table(_union_of_keys(records), records)


def _json_record(item, source: str, number: int) -> _Record:
    """Row ``number`` of a JSON or JSON lines file; anything but an object is refused."""
    if not isinstance(item, dict):
        raise DataError(
            f'must be a JSON object such as {{"prompt": ..., "completion": ...}}, '
            f"got {_describe(item)}",
            source=source,
            row=number,
        )
    return _Record(number, item)


def _read_json_lines(data: bytes, source: str, max_rows: int | None) -> _Table:
    records: list[_Record] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"is not valid UTF-8 (byte 0x{raw[exc.start : exc.start + 1].hex()} at "
                f"column {exc.start + 1}); save the file with UTF-8 encoding",
                source=source,
                row=number,
            ) from None
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = "; a JSON lines file holds one complete JSON object per line"
            if not records and line.lstrip().startswith("{"):
                hint += _whole_object_hint(data)
            raise DataError(
                f"is not valid JSON ({exc.msg} at column {exc.colno}){hint}",
                source=source,
                row=number,
            ) from None
        except (ValueError, RecursionError) as exc:
            raise DataError(
                f"cannot be parsed as JSON: {_short(str(exc), 120)}", source=source, row=number
            ) from None
        records.append(_json_record(item, source, number))
        if max_rows is not None and len(records) >= max_rows:
            break
    return _Table(_union_of_keys(records), records)


def _whole_object_hint(data: bytes) -> str:
    """Explain a pretty-printed single object, the common cause of a broken first line."""
    try:
        whole = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return ""
    if not isinstance(whole, dict):
        return ""
    keys = ", ".join(repr(str(k)) for k in list(whole)[:10])
    return (
        f"; the file holds one JSON object spread over several lines (keys {keys}): write "
        f"one row object per line, or a JSON list of row objects"
    )


def _read_csv_file(path: Path, source: str, max_rows: int | None) -> _Table:
    data = _read_bytes(path, source)
    if data.startswith(b"\xef\xbb\xbf"):  # byte order mark written by spreadsheet programs
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, message = _utf8_problem(data, exc)
        raise DataError(f"line {line} {message}", source=source) from None
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1, 2**20))  # long completions are fine
    try:
        return _parse_csv(text, source, max_rows)
    finally:
        csv.field_size_limit(old_limit)


def _parse_csv(text: str, source: str, max_rows: int | None) -> _Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records: list[_Record] = []
    row = 0
    end_of_previous = 0
    try:
        for cells in reader:
            start_line, end_of_previous = end_of_previous + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            if header is None:
                header = [cell.strip() for cell in cells]
                duplicates = sorted({c for c in header if header.count(c) > 1})
                if duplicates:
                    raise DataError(
                        f"the header names column(s) {', '.join(map(repr, duplicates))} more "
                        f"than once; give every column a distinct name",
                        source=source,
                    )
                continue
            row += 1
            note = f" (line {start_line} of the file)"
            if len(cells) > len(header):
                raise DataError(
                    f"has {len(cells)} values but the header has {len(header)} columns; quote "
                    f"values that contain commas{note}",
                    source=source,
                    row=row,
                )
            if len(cells) < len(header):
                note = (
                    f" (line {start_line} of the file, which has {len(cells)} of the header's "
                    f"{len(header)} values)"
                )
            records.append(_Record(row, dict(zip(header, cells, strict=False)), note))
            if max_rows is not None and len(records) >= max_rows:
                break
    except csv.Error as exc:
        raise DataError(
            f"cannot be parsed as CSV at line {reader.line_num}: {exc}", source=source
        ) from None
    if header is None:
        raise DataError(
            "has no rows (the file is empty; a CSV file starts with a header line such as "
            "prompt,completion)",
            source=source,
        )
    return _Table(header, records)


def _read_parquet_file(path: Path, source: str, max_rows: int | None) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
        fmt = detect_format(columns, source=source)
        wanted = [c for c in (*fmt.columns, *fmt.optional) if c in columns]
        records: list[_Record] = []
        for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
            for values in batch.to_pylist():
                records.append(_Record(len(records) + 1, values))
                if max_rows is not None and len(records) >= max_rows:
                    return _Table(columns, records)
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"cannot be read as parquet ({type(exc).__name__}: {_short(str(exc), 200)}); "
            f"check it is a complete parquet file, e.g. written by pandas.DataFrame.to_parquet",
            source=source,
        ) from None
    return _Table(columns, records)


def _load_with_datasets(
    source: str, path: Path, split: str, max_rows: int | None, *, local: bool
) -> list[AnyRow]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "needs the 'datasets' package to load a directory or a dataset name; install "
            "it with: pip install 'finetune-workbench[datasets]'",
            source=source,
        ) from None

    if not local:
        _check_hub_reachable(source)
    saved = local and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    label = source
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(
                        f"has no split {split!r}; its splits are {', '.join(map(repr, loaded))}",
                        source=source,
                    )
                dataset = loaded[split]
                label = f"{source} (split '{split}')"
            else:
                dataset = loaded
        else:
            dataset = datasets.load_dataset(str(path) if local else source, split=split)
            label = f"{source} (split '{split}')"
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure inside datasets is a bad source
        message = _short(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 300)
        if "Unknown split" in str(exc):
            raise DataError(f"has no split {split!r}: {message}", source=source) from None
        if not local and _hub_offline():
            raise DataError(
                "cannot be loaded: it is not in the local datasets cache and the hub is off "
                "(HF_HUB_OFFLINE is set); unset HF_HUB_OFFLINE on a machine that reaches the "
                f"hub, or pass a local file. A data source is {ACCEPTED_SOURCES}",
                source=source,
            ) from None
        if local:
            raise DataError(
                f"is a directory that datasets cannot load ({type(exc).__name__}: {message}); "
                f"it should hold .jsonl/.json/.csv/.parquet files or be written by "
                f"save_to_disk (pass a single file instead to have each row checked)",
                source=source,
            ) from None
        raise DataError(
            f"is not an existing file or directory and cannot be loaded as a Hugging Face "
            f"dataset ({type(exc).__name__}: {message}); a data source is {ACCEPTED_SOURCES}",
            source=source,
        ) from None

    try:
        columns = list(dataset.column_names)
        fmt = detect_format(columns, source=label)
        if max_rows is not None and len(dataset) > max_rows:
            dataset = dataset.select(range(max_rows))
        dataset = dataset.select_columns([c for c in (*fmt.columns, *fmt.optional) if c in columns])
        records = [_Record(i, values) for i, values in enumerate(dataset, start=1)]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoding errors from datasets/pyarrow
        raise DataError(
            f"cannot be read ({type(exc).__name__}: {_short(str(exc), 200)})", source=label
        ) from None
    return _rows_from_table(_Table(columns, records), label)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_hub_reachable(source: str, timeout_s: float = 3.0) -> None:
    """Fail at once, with no retries, when the dataset hub cannot be reached.

    ``datasets`` retries an unreachable hub five times with back-off (about 25 s of retry
    lines) before it gives up; one short request answers the same question. With
    ``HF_HUB_OFFLINE`` set there is nothing to probe: ``datasets`` reads its cache only.
    """
    if _hub_offline():
        return
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered: it is reachable
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"looks like a Hugging Face dataset id, but the hub at {endpoint} cannot be reached "
            f"({reason}); to load a copy in the local datasets cache set HF_HUB_OFFLINE=1, or "
            f"pass a local file. A data source is {ACCEPTED_SOURCES}",
            source=source,
        ) from None


__all__ = [
    "ACCEPTED_COLUMNS",
    "ACCEPTED_SOURCES",
    "CHAT",
    "FORMATS",
    "PREFERENCE",
    "PROMPT_COMPLETION",
    "DatasetFormat",
    "detect_format",
    "load_dataset_rows",
    "rows_from_records",
    "split_rows",
]
