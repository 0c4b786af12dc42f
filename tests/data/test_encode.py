"""Tokenisation with loss masks, on a small BPE tokenizer trained in the test session."""

from __future__ import annotations

import copy

import pytest
import torch

from workbench.data.encode import (
    IGNORE_INDEX,
    SEGMENT_IDS,
    Encoded,
    collate,
    encode_row,
    encode_rows,
    prompt_ids,
)
from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.data.tasks import TASKS
from workbench.spec.errors import DataError

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def tokenizer():
    from workbench.models.tiny import train_tokenizer

    rows = [row for task in TASKS.values() for row in task.rows(8, seed=0)]
    return train_tokenizer(rows, 300)


@pytest.fixture
def templated(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def labelled(enc: Encoded) -> list[int]:
    return [label for label in enc.labels if label != IGNORE_INDEX]


def labelled_runs(enc: Encoded) -> list[list[int]]:
    """Contiguous stretches of labelled tokens, one per trained turn."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in enc.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


# --------------------------------------------------------------------------- prompt/completion


def test_tokenizer_has_the_specials(tokenizer):
    assert tokenizer.bos_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id is not None
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert tokenizer.chat_template is None


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prompt_is_masked_completion_and_eos_are_labelled(tokenizer, name):
    for row in TASKS[name].rows(5, seed=1):
        enc = encode_row(tokenizer, row, max_length=512)
        n_prompt = 1 + len(ids(tokenizer, row.prompt))  # bos + prompt
        completion = ids(tokenizer, row.completion) + [tokenizer.eos_token_id]
        assert not enc.truncated
        assert (
            len(enc.input_ids) == len(enc.labels) == len(enc.segments) == n_prompt + len(completion)
        )
        assert enc.input_ids[0] == tokenizer.bos_token_id
        assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:] == completion
        assert tokenizer.decode(enc.input_ids) == "<s>" + row.prompt + row.completion + "</s>"
        assert tokenizer.decode(labelled(enc), skip_special_tokens=True) == row.completion
        # Generation starts exactly where the completion starts.
        assert prompt_ids(tokenizer, row) == enc.input_ids[:n_prompt]


def test_segment_ids_align_with_answer_and_explanation(tokenizer):
    row = Row("add 1 0:", (("answer", " 1"), ("explanation", " because")))
    enc = encode_row(tokenizer, row, max_length=512)

    def text_of(segment: int) -> str:
        return tokenizer.decode([i for i, s in zip(enc.input_ids, enc.segments) if s == segment])

    assert text_of(SEGMENT_IDS["prompt"]) == "<s>add 1 0:"
    assert text_of(SEGMENT_IDS["answer"]) == " 1</s>"  # the end token belongs to the answer
    assert text_of(SEGMENT_IDS["explanation"]) == " because"
    # Segment order follows the row: prompt, answer, explanation, then the end token.
    expected = (
        [SEGMENT_IDS["prompt"]] * (1 + len(ids(tokenizer, row.prompt)))
        + [SEGMENT_IDS["answer"]] * len(ids(tokenizer, " 1"))
        + [SEGMENT_IDS["explanation"]] * len(ids(tokenizer, " because"))
        + [SEGMENT_IDS["answer"]]
    )
    assert enc.segments == expected
    for label, segment in zip(enc.labels, enc.segments):
        assert (label == IGNORE_INDEX) == (segment == SEGMENT_IDS["prompt"])


def test_unknown_segment_name_counts_as_answer(tokenizer):
    enc = encode_row(tokenizer, Row("p:", (("reasoning", " x y"),)), max_length=64)
    assert set(enc.segments) == {SEGMENT_IDS["prompt"], SEGMENT_IDS["answer"]}


def test_preference_rows_are_refused(tokenizer):
    with pytest.raises(DataError, match="preference"):
        encode_row(tokenizer, PreferenceRow("p", "a", "b"), max_length=64)


# --------------------------------------------------------------------------- truncation


def test_truncation_is_counted_and_empty_rows_dropped(tokenizer):
    long_row = Row.plain("sort 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15:", " 1 2 3 4 5 6 7 8 9")
    short_row = Row.plain("add 1 2:", " 3")
    n_prompt_long = 1 + len(ids(tokenizer, long_row.prompt))
    n_short = 1 + len(ids(tokenizer, short_row.prompt)) + len(ids(tokenizer, " 3")) + 1
    assert n_short < n_prompt_long  # the limit below keeps the short row whole

    # One completion token of the long row survives: truncated, kept.
    limit = n_prompt_long + 1
    enc = encode_row(tokenizer, long_row, max_length=limit)
    assert enc.truncated and len(enc.input_ids) == len(enc.labels) == len(enc.segments) == limit
    assert len(labelled(enc)) == 1

    # No completion token survives: truncated and dropped.
    rows = [short_row, long_row, short_row, long_row]
    encoded, stats = encode_rows(tokenizer, rows, max_length=n_prompt_long)
    assert stats.rows == 4
    assert stats.truncated_rows == 2
    assert stats.dropped_rows == 2 and stats.examples_dropped == [1, 3]
    assert len(encoded) == 2
    assert stats.tokens == sum(len(e.input_ids) for e in encoded) == 2 * n_short
    assert stats.completion_tokens == sum(len(labelled(e)) for e in encoded)
    metrics = stats.as_metrics()
    assert metrics["data/dropped_rows"] == 2.0 and metrics["data/truncated_rows"] == 2.0
    assert metrics["data/rows"] == 4.0


def test_truncation_mid_completion_is_kept_and_counted(tokenizer):
    rows = TASKS["order"].rows(6, seed=0)
    full = [encode_row(tokenizer, r, max_length=10_000) for r in rows]
    limit = min(len(e.input_ids) for e in full) - 2
    encoded, stats = encode_rows(tokenizer, rows, max_length=limit)
    assert stats.truncated_rows == sum(len(e.input_ids) > limit for e in full) == len(rows)
    assert stats.dropped_rows == 0
    for got, whole in zip(encoded, full):
        assert got.input_ids == whole.input_ids[:limit] and got.labels == whole.labels[:limit]


def test_all_rows_dropped_is_a_data_error(tokenizer):
    rows = TASKS["sort"].rows(3, seed=0)
    with pytest.raises(DataError, match="max_length=2"):
        encode_rows(tokenizer, rows, max_length=2)


# --------------------------------------------------------------------------- collate


def test_collate_pads_right(tokenizer):
    rows = [
        Row.plain("add 1 2:", " 3"),
        TASKS["order"].rows(1, seed=0)[0],
        Row("p:", (("answer", " a"), ("explanation", " b"))),
    ]
    batch_rows = [encode_row(tokenizer, r, max_length=512) for r in rows]
    pad = tokenizer.pad_token_id
    batch = collate(batch_rows, pad_id=pad)
    width = max(len(e.input_ids) for e in batch_rows)
    for key in ("input_ids", "labels", "segments", "attention_mask"):
        assert batch[key].shape == (3, width) and batch[key].dtype == torch.long
    for i, e in enumerate(batch_rows):
        k = len(e.input_ids)
        assert batch["input_ids"][i].tolist() == e.input_ids + [pad] * (width - k)
        assert batch["labels"][i].tolist() == e.labels + [IGNORE_INDEX] * (width - k)
        assert batch["segments"][i].tolist() == e.segments + [0] * (width - k)
        assert batch["attention_mask"][i].tolist() == [1] * k + [0] * (width - k)


# --------------------------------------------------------------------------- chat rows

CONVERSATION = ChatRow(
    (
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "add 1 2:"},
        {"role": "assistant", "content": "3"},
        {"role": "user", "content": "reverse a b c:"},
        {"role": "assistant", "content": "c b a"},
    )
)
SINGLE_TURN = ChatRow(
    ({"role": "user", "content": "sort 3 1 2:"}, {"role": "assistant", "content": "1 2 3"})
)


def fallback_text(messages) -> str:
    """The rendering without a chat template, as text: an end token after each answer."""
    return "".join(
        f"{m['role']}: {m['content']}\n" + ("</s>" if m["role"] == "assistant" else "")
        for m in messages
    )


@pytest.mark.parametrize("row", [SINGLE_TURN, CONVERSATION], ids=["single", "multi"])
def test_chat_fallback_labels_assistant_turns_only(tokenizer, row):
    enc = encode_row(tokenizer, row, max_length=512)
    assistant = [m["content"] for m in row.messages if m["role"] == "assistant"]
    runs = labelled_runs(enc)
    assert [tokenizer.decode(run) for run in runs] == [f" {c}\n</s>" for c in assistant]
    # The whole sequence is the plain rendering, with an end token after each assistant turn.
    assert tokenizer.decode(enc.input_ids) == "<s>" + fallback_text(row.messages)
    for label, segment in zip(enc.labels, enc.segments):
        assert segment == (
            SEGMENT_IDS["prompt"] if label == IGNORE_INDEX else SEGMENT_IDS["assistant"]
        )


@pytest.mark.parametrize("row", [SINGLE_TURN, CONVERSATION], ids=["single", "multi"])
def test_chat_fallback_generation_prompt(tokenizer, row):
    """Generation is prompted with exactly the tokens training saw before the last answer,
    earlier answers' end tokens included."""
    enc = encode_row(tokenizer, row, max_length=512)
    prompt = prompt_ids(tokenizer, row)
    assert tokenizer.decode(prompt) == "<s>" + fallback_text(row.messages[:-1]) + "assistant:"
    assert enc.input_ids[: len(prompt)] == prompt
    # The last answer is labelled from the first token after the prompt on.
    assert enc.labels[len(prompt) - 1] == IGNORE_INDEX
    assert enc.labels[len(prompt) :] == enc.input_ids[len(prompt) :]


@pytest.mark.parametrize("row", [SINGLE_TURN, CONVERSATION], ids=["single", "multi"])
def test_chat_template_labels_assistant_content(templated, row):
    enc = encode_row(templated, row, max_length=512)
    assistant = [m["content"] for m in row.messages if m["role"] == "assistant"]
    # The template appends "\n" after each message; no end token is added on top of it.
    assert [templated.decode(run) for run in labelled_runs(enc)] == [c + "\n" for c in assistant]
    rendered = "".join(f"<|{m['role']}|>{m['content']}\n" for m in row.messages)
    assert templated.decode(enc.input_ids) == rendered
    assert templated.eos_token_id not in enc.input_ids

    prompt = prompt_ids(templated, row)
    rendered_prompt = "".join(f"<|{m['role']}|>{m['content']}\n" for m in row.messages[:-1])
    assert templated.decode(prompt) == rendered_prompt + "<|assistant|>"
    assert enc.input_ids[: len(prompt)] == prompt
    assert enc.labels[len(prompt) :] == enc.input_ids[len(prompt) :]


def test_chat_template_that_rewrites_history_is_refused(templated):
    # A template that renders earlier turns differently once a later turn exists.
    templated.chat_template = (
        "{% for m in messages %}{% if loop.last %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
        "{% else %}[{{ m['role'] }}]{{ m['content'] }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    with pytest.raises(DataError, match="chat template"):
        encode_row(templated, CONVERSATION, max_length=512)
