"""Dataset records to rows: the formats TRL defines, detected from the columns, and each
record checked and turned into a :class:`Row`, :class:`ChatRow` or :class:`PreferenceRow`
(the rules are in :mod:`workbench.data.formats`' docstring)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.spec.errors import DataError

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
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
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
PREFERENCE = DatasetFormat(
    "preference", ("prompt", "chosen", "rejected"), ("chosen_scores", "rejected_scores")
)
FORMATS: tuple[DatasetFormat, ...] = (PROMPT_COMPLETION, CHAT, PREFERENCE)


class Record(NamedTuple):
    """One record of a dataset as read, with the row number its problems are reported by."""

    row: int  # 1-based row number reported to the user
    values: Mapping[str, Any]
    note: str = ""  # appended to messages, e.g. " (line 7 of the file)"


class Table(NamedTuple):
    """What a reader returns: the columns of a dataset and its numbered records."""

    columns: list[str]
    records: list[Record]


class _RowProblem(Exception):
    """A malformed value; the caller adds the source and the row number."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field, self.message = field, message


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


# ---------------------------------------------------------------------------------------
# Rows from records


def rows_from_table(table: Table, source: str) -> list[AnyRow]:
    """The rows of a table in the format its columns name, each record checked."""
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


def _raise_if_mixed_formats(records: list[Record], source: str) -> None:
    """When the union of columns is ambiguous, name the first row that switches format."""
    first: tuple[Record, DatasetFormat] | None = None
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
                f"must be a string, got {describe_value(value)}; conversational preference data "
                f"(lists of messages) is not supported, so give the prompt and the two "
                f"answers as text",
            )
    return PreferenceRow(
        _text(values, "prompt"),
        _text(values, "chosen"),
        _text(values, "rejected"),
        scores=_pair_scores(values),
    )


def _pair_scores(values: Mapping[str, Any]) -> tuple[tuple[str, float, float], ...]:
    """Optional per-attribute scores (MODPO): ``chosen_scores`` and ``rejected_scores``, each
    an object mapping attribute names to numbers, with the same names (JSON text in CSV)."""
    given = {name: values.get(name) for name in ("chosen_scores", "rejected_scores")}
    if all(v is None for v in given.values()):
        return ()
    shape = 'an object mapping each attribute to a number, e.g. {"correctness": 1, "length": 9}'
    parsed = {}
    for name, value in given.items():
        if value is None:
            other = next(n for n in given if n != name)
            raise _RowProblem(name, f"is missing while '{other}' is given; give both, {shape}")
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as exc:
                raise _RowProblem(name, f"is not valid JSON ({exc}); write {shape}") from None
        if not isinstance(value, Mapping) or not value:
            raise _RowProblem(name, f"must be {shape}, got {describe_value(value)}")
        for key, score in value.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise _RowProblem(f"{name}.{key}", f"must be a number, got {describe_value(score)}")
            if not -float("inf") < score < float("inf"):
                raise _RowProblem(f"{name}.{key}", f"must be a finite number, got {score}")
        parsed[name] = {str(k): float(v) for k, v in value.items()}
    chosen, rejected = parsed["chosen_scores"], parsed["rejected_scores"]
    if set(chosen) != set(rejected):
        raise _RowProblem(
            "rejected_scores",
            f"has attributes {sorted(rejected)} but chosen_scores has "
            f"{sorted(chosen)}; score both completions on the same ones",
        )
    return tuple((k, chosen[k], rejected[k]) for k in sorted(chosen))


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
        raise _RowProblem("messages", f"must be {shape}, got {describe_value(value)}")
    if not value:
        raise _RowProblem("messages", f"is an empty list; write {shape}")
    messages = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise _RowProblem(
                where, f"must be an object with 'role' and 'content', got {describe_value(item)}"
            )
        for key in ("role", "content"):
            if key not in item:
                raise _RowProblem(
                    f"{where}.{key}", "is missing; each message needs 'role' and 'content'"
                )
        role, content = item["role"], item["content"]
        if not isinstance(role, str):
            raise _RowProblem(f"{where}.role", f"must be a string, got {describe_value(role)}")
        if role not in ROLES:
            raise _RowProblem(
                f"{where}.role",
                f"unknown role {shortened(role)!r}; the roles are {', '.join(ROLES)}",
            )
        if not isinstance(content, str):
            raise _RowProblem(
                f"{where}.content", f"must be a string, got {describe_value(content)}"
            )
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
        raise _RowProblem(name, f"must be a string, got {describe_value(value)}{hint}")
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


def describe_value(value: Any) -> str:
    """A value as an error message names it: its type, and the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        try:
            return f"a number ({shortened(repr(value))})"
        except ValueError:  # an int too long to print
            return "a number"
    if isinstance(value, str):
        return f"a string ({shortened(value)!r})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, Mapping):
        return "an object"
    return f"a value of type {type(value).__name__}"


def shortened(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters (ending in '...') for an error message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def union_of_keys(records: Iterable[Record]) -> list[str]:
    """Every key of the records, in order of first appearance: a table's columns."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record.values:
            seen.setdefault(str(key), None)
    return list(seen)


def looks_like_path(name: str) -> bool:
    """Whether a data source is written as a path (so a missing one is not a hub name)."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in name
        or os.path.isabs(name)
    )
