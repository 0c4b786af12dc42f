"""File readers for user datasets: each returns the columns and numbered records of one
JSON lines, JSON, CSV or parquet file, with problems reported by row and field."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from workbench.data.records import (
    Record,
    Table,
    describe_value,
    detect_format,
    shortened,
    union_of_keys,
)
from workbench.spec.errors import DataError

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


def read_json_file(path: Path, source: str, max_rows: int | None) -> Table:
    data = _read_bytes(path, source)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip()[:1] == b"[":
        return _read_json_list(data, source, max_rows)
    return _read_json_lines(data, source, max_rows)


def _read_json_list(data: bytes, source: str, max_rows: int | None) -> Table:
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
            f"cannot be parsed as JSON: {shortened(str(exc), 120)}", source=source
        ) from None
    if not isinstance(items, list):  # "[1] [2]" style content never gets here; be safe
        raise DataError("must hold a JSON list of row objects", source=source)
    if max_rows is not None:
        items = items[:max_rows]
    records = []
    for i, item in enumerate(items, start=1):
        records.append(_json_record(item, source, i))
    return Table(union_of_keys(records), records)


def _json_record(item, source: str, number: int) -> Record:
    """Row ``number`` of a JSON or JSON lines file; anything but an object is refused."""
    if not isinstance(item, dict):
        raise DataError(
            f'must be a JSON object such as {{"prompt": ..., "completion": ...}}, '
            f"got {describe_value(item)}",
            source=source,
            row=number,
        )
    return Record(number, item)


def _read_json_lines(data: bytes, source: str, max_rows: int | None) -> Table:
    records: list[Record] = []
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
                f"cannot be parsed as JSON: {shortened(str(exc), 120)}", source=source, row=number
            ) from None
        records.append(_json_record(item, source, number))
        if max_rows is not None and len(records) >= max_rows:
            break
    return Table(union_of_keys(records), records)


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


def read_csv_file(path: Path, source: str, max_rows: int | None) -> Table:
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


def _parse_csv(text: str, source: str, max_rows: int | None) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records: list[Record] = []
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
            records.append(Record(row, dict(zip(header, cells, strict=False)), note))
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
    return Table(header, records)


def read_parquet_file(path: Path, source: str, max_rows: int | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
        fmt = detect_format(columns, source=source)
        wanted = [c for c in (*fmt.columns, *fmt.optional) if c in columns]
        records: list[Record] = []
        for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
            for values in batch.to_pylist():
                records.append(Record(len(records) + 1, values))
                if max_rows is not None and len(records) >= max_rows:
                    return Table(columns, records)
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError) as exc:
        raise DataError(
            f"cannot be read as parquet ({type(exc).__name__}: {shortened(str(exc), 200)}); "
            f"check it is a complete parquet file, e.g. written by pandas.DataFrame.to_parquet",
            source=source,
        ) from None
    return Table(columns, records)
