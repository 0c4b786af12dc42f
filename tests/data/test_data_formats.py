"""Loading user datasets in TRL's formats: round trips, row-level errors, fuzzing, splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from workbench.data.formats import load_dataset_rows, rows_from_records, split_rows
from workbench.data.records import CHAT, PREFERENCE, PROMPT_COMPLETION, detect_format
from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.spec.errors import DataError

PLAIN = [
    {"prompt": "2+2=", "completion": "4"},
    {"prompt": "Capital of France?", "completion": " Paris", "source": "extra columns are ignored"},
]
EXPLAINED = [
    {"prompt": "2+2=", "completion": "4", "explanation": " because two and two make four"},
    {"prompt": "3*3=", "completion": "9", "explanation": "\nthree threes"},
]
CHAT_RECORDS = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "ünïcödé ✓"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "ok again"},
        ]
    },
]
PREFERENCE_RECORDS = [
    {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
    {"prompt": "Count to 3", "chosen": "1 2 3", "rejected": "1 3"},
]

EXPECTED = {
    "plain": [Row.plain("2+2=", "4"), Row.plain("Capital of France?", " Paris")],
    "explained": [
        Row("2+2=", (("answer", "4"), ("explanation", " because two and two make four"))),
        Row("3*3=", (("answer", "9"), ("explanation", "\nthree threes"))),
    ],
    "chat": [ChatRow(tuple(r["messages"])) for r in CHAT_RECORDS],
    "preference": [PreferenceRow(**r) for r in PREFERENCE_RECORDS],
}
RECORDS = {
    "plain": PLAIN,
    "explained": EXPLAINED,
    "chat": CHAT_RECORDS,
    "preference": PREFERENCE_RECORDS,
}


# ---------------------------------------------------------------------------------------
# Writers


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json_list(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_csv(path: Path, records: list) -> Path:
    columns = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in records:
            writer.writerow(
                [json.dumps(r[c]) if isinstance(r.get(c), list) else r.get(c, "") for c in columns]
            )
    return path


def write_parquet(path: Path, records: list) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


WRITERS = {
    ".jsonl": write_jsonl,
    ".json": write_json_list,
    ".csv": write_csv,
    ".parquet": write_parquet,
}


def write(tmp_path: Path, suffix: str, records: list, name: str = "data") -> Path:
    return WRITERS[suffix](tmp_path / f"{name}{suffix}", records)


# ---------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("suffix", list(WRITERS))
@pytest.mark.parametrize("kind", list(RECORDS))
def test_each_format_round_trips_from_each_file_type(tmp_path, suffix, kind):
    path = write(tmp_path, suffix, RECORDS[kind])
    assert load_dataset_rows(str(path)) == EXPECTED[kind]


def test_json_file_may_hold_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "data.json", PLAIN)
    assert load_dataset_rows(path) == EXPECTED["plain"]


def test_parquet_written_by_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "data.parquet"
    pd.DataFrame(CHAT_RECORDS).to_parquet(path)
    assert load_dataset_rows(str(path)) == EXPECTED["chat"]


def test_row_text_is_kept_exactly(tmp_path):
    records = [{"prompt": "  lead\n", "completion": "tab\there ✓ \U0001f600 \\n"}]
    rows = load_dataset_rows(write_jsonl(tmp_path / "d.jsonl", records))
    assert rows == [Row.plain("  lead\n", "tab\there ✓ \U0001f600 \\n")]


def test_explanation_segments_make_the_completion(tmp_path):
    (row, _) = load_dataset_rows(write_jsonl(tmp_path / "d.jsonl", EXPLAINED))
    assert row.answer == "4"
    assert row.completion == "4 because two and two make four"


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('\n{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": 5}\n')
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert err.value.row == 4


def test_csv_with_byte_order_mark_and_spaced_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffprompt, completion\n2+2=,4\n".encode())
    assert load_dataset_rows(str(path)) == [Row.plain("2+2=", "4")]


def test_max_rows_keeps_the_first_rows_and_skips_checking_the_rest(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\nnot json\n'
    )
    assert load_dataset_rows(str(path), max_rows=2) == [Row.plain("a", "b"), Row.plain("c", "d")]
    for suffix in (".csv", ".parquet", ".json"):
        many = write(tmp_path, suffix, PLAIN * 3, name="many")
        assert load_dataset_rows(str(many), max_rows=1) == EXPECTED["plain"][:1]
    with pytest.raises(DataError, match="max_rows"):
        load_dataset_rows(str(path), max_rows=0)


def test_rows_from_records_checks_like_a_file():
    assert rows_from_records(PREFERENCE_RECORDS, source="memory") == EXPECTED["preference"]
    with pytest.raises(DataError, match=r"memory, row 2, field 'rejected'"):
        rows_from_records([PREFERENCE_RECORDS[0], {"prompt": "p", "chosen": "c"}], source="memory")


def test_detect_format():
    assert detect_format(["prompt", "completion", "id"]) is PROMPT_COMPLETION
    assert detect_format(["messages"]) is CHAT
    assert detect_format(["rejected", "prompt", "chosen"]) is PREFERENCE


# ---------------------------------------------------------------------------------------
# Row-level errors: file name, row number and field in the message

MALFORMED_JSONL = [
    # (rows of the file, bad row (1-based), field)
    ([{"prompt": "p"}, {"prompt": "p", "completion": "c"}], 1, "completion"),
    ([PLAIN[0], {"completion": "c"}], 2, "prompt"),
    ([PLAIN[0], PLAIN[0], {"prompt": "p", "completion": 7}], 3, "completion"),
    ([PLAIN[0], {"prompt": "p", "completion": None}], 2, "completion"),
    ([PLAIN[0], {"prompt": "p", "completion": ["a"]}], 2, "completion"),
    ([PLAIN[0], {"prompt": True, "completion": "c"}], 2, "prompt"),
    ([PLAIN[0], {"prompt": "", "completion": "c"}], 2, "prompt"),
    ([PLAIN[0], {"prompt": "p", "completion": "   "}], 2, "completion"),
    ([EXPLAINED[0], {"prompt": "p", "completion": "c"}], 2, "explanation"),
    ([EXPLAINED[0], {"prompt": "p", "completion": "c", "explanation": 1.5}], 2, "explanation"),
    ([{"prompt": "p", "completion": "\ud800"}], 1, "completion"),
    ([CHAT_RECORDS[0], {"messages": "hello"}], 2, "messages"),
    ([CHAT_RECORDS[0], {"messages": []}], 2, "messages"),
    ([CHAT_RECORDS[0], {"other": 1}], 2, "messages"),
    ([CHAT_RECORDS[0], {"messages": [{"content": "x"}]}], 2, "messages[0].role"),
    ([CHAT_RECORDS[0], {"messages": [{"role": "user"}]}], 2, "messages[0].content"),
    ([{"messages": ["hi", {"role": "assistant", "content": "x"}]}], 1, "messages[0]"),
    (
        [CHAT_RECORDS[0], {"messages": [{"role": "bot", "content": "x"}]}],
        2,
        "messages[0].role",
    ),
    (
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}],
        1,
        "messages[1].content",
    ),
    (
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}],
        1,
        "messages[1].content",
    ),
    (
        [CHAT_RECORDS[0], CHAT_RECORDS[1], {"messages": [{"role": "user", "content": "q"}]}],
        3,
        "messages",
    ),
    ([PREFERENCE_RECORDS[0], {"prompt": "p", "chosen": "c"}], 2, "rejected"),
    ([PREFERENCE_RECORDS[0], {"prompt": "p", "chosen": "c", "rejected": 0}], 2, "rejected"),
    ([PREFERENCE_RECORDS[0], {"prompt": "p", "chosen": "", "rejected": "r"}], 2, "chosen"),
    (
        [{"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}], "rejected": "r"}],
        1,
        "chosen",
    ),
    ([PLAIN[0], CHAT_RECORDS[0]], 2, "messages"),  # formats mixed within one file
]


def assert_names(err: DataError, path: Path, row: int | None, field: str | None) -> None:
    message = str(err)
    assert path.name in message
    if row is not None:
        assert err.row == row
        assert f"row {row}" in message
    if field is not None:
        assert err.field == field
        assert f"'{field}'" in message


@pytest.mark.parametrize(("records", "row", "field"), MALFORMED_JSONL)
def test_malformed_jsonl_row_names_file_row_and_field(tmp_path, records, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, row, field)
    assert err.value.__cause__ is None  # no chained traceback from a library


@pytest.mark.parametrize(("records", "row", "field"), MALFORMED_JSONL)
def test_malformed_json_list_row_names_file_row_and_field(tmp_path, records, row, field):
    path = write_json_list(tmp_path / "bad.json", records)
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, row, field)


@pytest.mark.parametrize(
    ("text", "row", "field"),
    [
        ("prompt,completion\na,b\nc,\n", 2, "completion"),
        ("prompt,completion\na,b\n ,d\n", 2, "prompt"),
        ("prompt,completion\na,b\nc\n", 2, "completion"),  # short row
        ("prompt,completion,explanation\na,b,c\nd,e,\n", 2, "explanation"),
        ("prompt,chosen,rejected\na,b,c\nd,e\n", 2, "rejected"),
        ('messages\n"[{""role"": ""user"", ""content"": ""q""}]"\n', 1, "messages"),
        ('messages\n"[{""role"": ""bot"", ""content"": ""q""}]"\n', 1, "messages[0].role"),
        ("messages\n[not json\n", 1, "messages"),
        ("messages\nhello\n", 1, "messages"),
        ("prompt,completion\na,b\nc,d,e\n", 2, None),  # too many values
    ],
)
def test_malformed_csv_row_names_file_row_and_field(tmp_path, text, row, field):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, row, field)
    assert f"line {row + 1} of the file" in str(err.value)


@pytest.mark.parametrize(
    ("records", "row", "field"),
    [
        ([PLAIN[0], {"prompt": "p", "completion": None}], 2, "completion"),
        ([{"prompt": "p", "completion": 1}, {"prompt": "p", "completion": 2}], 1, "completion"),
        ([PLAIN[0], {"prompt": "", "completion": "c"}], 2, "prompt"),
        (
            [CHAT_RECORDS[0], {"messages": [{"role": "user", "content": "q"}]}],
            2,
            "messages",
        ),
        (
            [CHAT_RECORDS[0], {"messages": [{"role": "assistant", "content": None}]}],
            2,
            "messages[0].content",
        ),
        ([PREFERENCE_RECORDS[0], {"prompt": "p", "chosen": "c", "rejected": None}], 2, "rejected"),
    ],
)
def test_malformed_parquet_row_names_file_row_and_field(tmp_path, records, row, field):
    path = write_parquet(tmp_path / "bad.parquet", records)
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, row, field)


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n')
    with pytest.raises(DataError, match="not valid JSON") as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, 2, None)


def test_pretty_printed_object_in_jsonl_is_explained(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PLAIN[0], indent=2))
    with pytest.raises(DataError, match="one row object per line"):
        load_dataset_rows(str(path))


def test_non_object_line_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n["a", "b"]\n')
    with pytest.raises(DataError, match="must be a JSON object") as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, 2, None)


def test_invalid_json_list_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "a",,}\n]')
    with pytest.raises(DataError, match="line 3") as err:
        load_dataset_rows(str(path))
    assert path.name in str(err.value)


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"prompt": ' + "[" * 100_000 + "\n")
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, 1, None)


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n')
    with pytest.raises(DataError, match="UTF-8") as err:
        load_dataset_rows(str(path))
    assert_names(err.value, path, 2, None)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_bad_utf8_in_csv_and_json_names_the_line(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    body = (
        b"prompt,completion\na,b\nc,\xe9t\xe9\n"
        if suffix == ".csv"
        else b'[{"prompt": "a", "completion": "b"},\n {"prompt": "\xe9", "completion": "b"}]'
    )
    path.write_bytes(body)
    with pytest.raises(DataError, match="UTF-8") as err:
        load_dataset_rows(str(path))
    line = 3 if suffix == ".csv" else 2
    assert path.name in str(err.value)
    assert f"line {line}" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", b""),
        ("blank.jsonl", b"\n \n\n"),
        ("empty.json", b"[]"),
        ("empty.csv", b""),
        ("header.csv", b"prompt,completion\n"),
    ],
)
def test_empty_file_has_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match="has no rows") as err:
        load_dataset_rows(str(path))
    assert name in str(err.value)


def test_empty_parquet_has_no_rows(tmp_path):
    schema = pa.schema([("prompt", pa.string()), ("completion", pa.string())])
    path = tmp_path / "empty.parquet"
    pq.write_table(schema.empty_table(), path)
    with pytest.raises(DataError, match="has no rows"):
        load_dataset_rows(str(path))


def test_corrupt_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError, match="cannot be read as parquet") as err:
        load_dataset_rows(str(path))
    assert err.value.__cause__ is None


# ---------------------------------------------------------------------------------------
# Column-level errors


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_text_only_column_is_refused_naming_the_accepted_formats(tmp_path, suffix):
    path = write(tmp_path, suffix, [{"text": "just text"}])
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    message = str(err.value)
    assert path.name in message
    assert "'text'" in message
    for column in ("'prompt'", "'completion'", "'messages'", "'chosen'", "'rejected'"):
        assert column in message


def test_unrecognised_columns_are_listed_with_a_hint(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"question": "q", "prompt": "p", "answer": "a"}])
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(path))
    message = str(err.value)
    for column in ("'question'", "'prompt'", "'answer'"):
        assert column in message
    assert "add 'completion'" in message


def test_columns_fitting_two_formats_are_refused(tmp_path):
    path = write_parquet(
        tmp_path / "d.parquet",
        [{"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"}],
    )
    with pytest.raises(DataError, match="more than one format"):
        load_dataset_rows(str(path))


def test_unsupported_suffix_and_missing_file(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt.*unsupported file type '\.txt'"):
        load_dataset_rows(str(txt))
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(missing))
    message = str(err.value)
    assert "missing.jsonl" in message
    assert "no such file" in message
    assert "a built-in task name" in message


def test_source_must_be_a_string():
    with pytest.raises(DataError, match="non-empty string"):
        load_dataset_rows("  ")
    with pytest.raises(DataError, match="non-empty string"):
        load_dataset_rows(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# datasets directories and names, offline


@pytest.fixture
def offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # Both libraries read the variables at import time, which may have happened already.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_saved_dataset_directory(tmp_path, offline_datasets):
    folder = tmp_path / "saved"
    offline_datasets.Dataset.from_list(CHAT_RECORDS).save_to_disk(str(folder))
    assert load_dataset_rows(str(folder)) == EXPECTED["chat"]
    assert load_dataset_rows(str(folder), max_rows=1) == EXPECTED["chat"][:1]


def test_saved_dataset_dict_picks_the_split(tmp_path, offline_datasets):
    ds = offline_datasets
    folder = tmp_path / "saved_dict"
    ds.DatasetDict(
        {
            "train": ds.Dataset.from_list(PREFERENCE_RECORDS),
            "test": ds.Dataset.from_list(PREFERENCE_RECORDS[:1]),
        }
    ).save_to_disk(str(folder))
    assert load_dataset_rows(str(folder)) == EXPECTED["preference"]
    assert load_dataset_rows(str(folder), split="test") == EXPECTED["preference"][:1]
    with pytest.raises(DataError, match=r"no split 'validation'.*'train', 'test'"):
        load_dataset_rows(str(folder), split="validation")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_directory_of_data_files(tmp_path, offline_datasets, suffix):
    folder = tmp_path / f"folder_{suffix[1:]}"
    folder.mkdir()
    write(folder, suffix, PLAIN, name="train")
    write(folder, suffix, PLAIN[:1], name="test")
    assert load_dataset_rows(str(folder)) == EXPECTED["plain"]
    assert load_dataset_rows(str(folder), split="test") == EXPECTED["plain"][:1]
    with pytest.raises(DataError, match="no split 'validation'"):
        load_dataset_rows(str(folder), split="validation")


def test_malformed_row_in_saved_dataset_names_split_row_and_field(tmp_path, offline_datasets):
    folder = tmp_path / "saved_bad"
    records = [PLAIN[0], {"prompt": "p", "completion": None}]
    offline_datasets.DatasetDict(
        {"train": offline_datasets.Dataset.from_list(records)}
    ).save_to_disk(str(folder))
    with pytest.raises(DataError) as err:
        load_dataset_rows(str(folder))
    assert_names(err.value, folder, 2, "completion")
    assert "split 'train'" in str(err.value)


def test_directory_datasets_cannot_load(tmp_path, offline_datasets):
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    (folder / "notes.txt").write_text("")
    with pytest.raises(DataError, match="nothing_here.*cannot load"):
        load_dataset_rows(str(folder))


def test_unknown_dataset_name_offline(offline_datasets):
    with pytest.raises(DataError) as err:
        load_dataset_rows("no-such-owner/no-such-dataset")
    message = str(err.value)
    assert "no-such-owner/no-such-dataset" in message
    assert "cannot be loaded" in message
    assert "a built-in task name" in message


# ---------------------------------------------------------------------------------------
# Fuzzing the JSON lines loader

_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\n", "system", "user", "assistant", "tool", "\ud800x"]),
    st.builds(lambda ch, n: ch * n, st.characters(), st.integers(0, 200_000)),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_GOOD_TEXT = st.one_of(
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.builds(lambda n: "é✓x" * n, st.integers(1, 100_000)),
)
# Mostly usable text, sometimes any JSON value: enough valid rows to reach every row check.
_VALUE = st.sampled_from(["good"] * 6 + ["text", "json"]).flatmap(
    lambda kind: {"good": _GOOD_TEXT, "text": _TEXT, "json": _JSON}[kind]
)
_GOOD_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "assistant"]), "content": _VALUE}
)
_ODD_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "bot", "User"]) | _JSON,
        "content": _VALUE,
        "name": _JSON,
    },
)
_MESSAGE = st.sampled_from([_GOOD_MESSAGE] * 5 + [_ODD_MESSAGE, _JSON]).flatmap(lambda m: m)
_EXTRA = {"id": _JSON, "text": _VALUE}
_ROW_SHAPES = {
    "prompt_completion": st.fixed_dictionaries(
        {"prompt": _VALUE, "completion": _VALUE}, optional={"explanation": _VALUE, **_EXTRA}
    ),
    "chat": st.fixed_dictionaries(
        {
            "messages": st.sampled_from([st.lists(_MESSAGE, max_size=4)] * 4 + [_JSON]).flatmap(
                lambda m: m
            )
        },
        optional=_EXTRA,
    ),
    "preference": st.fixed_dictionaries(
        {"prompt": _VALUE, "chosen": _VALUE, "rejected": _VALUE}, optional=_EXTRA
    ),
    "anything": st.dictionaries(
        st.sampled_from(
            ["prompt", "completion", "explanation", "messages", "chosen", "rejected", "text"]
        ),
        st.one_of(_VALUE, st.lists(_MESSAGE, max_size=3)),
        max_size=5,
    ),
}
_GARBAGE_LINE = st.one_of(
    st.binary(max_size=12),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"}", b"[]", b"null", b'{"prompt": "a"', b"\xff\xfe"]),
)


def _row_line(row_shape):
    return st.tuples(row_shape, st.booleans()).map(
        # surrogatepass: lone surrogates become bytes that are not UTF-8, like a broken file
        lambda r: json.dumps(r[0], ensure_ascii=r[1]).encode("utf-8", "surrogatepass")
    )


@st.composite
def _file_lines(draw) -> list[bytes]:
    """Rows of one shape, now and then a broken line or a row of another shape."""
    shape = draw(st.sampled_from(list(_ROW_SHAPES)))
    lines = []
    for kind in draw(st.lists(st.sampled_from(["row"] * 8 + ["garbage", "other"]), max_size=5)):
        if kind == "garbage":
            lines.append(draw(_GARBAGE_LINE))
        else:
            lines.append(draw(_row_line(_ROW_SHAPES["anything" if kind == "other" else shape])))
    return lines


def _assert_valid(row) -> None:
    if isinstance(row, Row):
        assert isinstance(row.prompt, str) and row.prompt.strip()
        assert row.segments and row.segments[0][0] == "answer"
        assert all(isinstance(t, str) and t.strip() for _, t in row.segments)
    elif isinstance(row, ChatRow):
        assert row.messages
        assert all(set(m) == {"role", "content"} for m in row.messages)
        assert all(m["role"] in ("system", "user", "assistant") for m in row.messages)
        assert all(isinstance(m["content"], str) for m in row.messages)
        assert isinstance(row.answer, str) and row.answer.strip()
    else:
        assert isinstance(row, PreferenceRow)
        assert all(isinstance(t, str) and t.strip() for t in (row.prompt, row.chosen, row.rejected))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=_file_lines())
def test_random_jsonl_gives_valid_rows_or_a_data_error(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        rows = load_dataset_rows(str(path))
    except DataError as err:
        assert "fuzz.jsonl" in str(err)
        event(f"DataError, field {err.field}" if err.field else "DataError")
        return
    event(f"{len(rows)} {type(rows[0]).__name__} rows")
    assert rows
    assert len({type(r) for r in rows}) == 1
    for row in rows:
        _assert_valid(row)


# ---------------------------------------------------------------------------------------
# Train/eval split


def test_split_rows_is_deterministic_and_partitions():
    rows = list(range(50))
    train, held_out = split_rows(rows, 0.2, seed=3)
    assert len(held_out) == 10
    assert sorted(train + held_out) == rows
    assert split_rows(rows, 0.2, seed=3) == (train, held_out)
    assert split_rows(rows, 0.2, seed=4) != (train, held_out)


@pytest.mark.parametrize(("n", "fraction"), [(2, 0.01), (2, 0.99), (3, 0.01), (10, 0.99)])
def test_split_rows_keeps_one_row_on_each_side(n, fraction):
    train, held_out = split_rows(list(range(n)), fraction, seed=0)
    assert len(train) >= 1 and len(held_out) >= 1
    assert len(train) + len(held_out) == n


def test_split_rows_refuses_too_few_rows_and_bad_fractions():
    with pytest.raises(DataError, match="at least 2 rows"):
        split_rows([Row.plain("a", "b")], 0.5, seed=0)
    with pytest.raises(DataError, match="at least 2 rows"):
        split_rows([], 0.5, seed=0)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(DataError, match="eval_fraction"):
            split_rows([1, 2, 3], fraction, seed=0)
