"""Tokenisation with loss masks: only completion / assistant tokens are trained on.

Prompt and each completion segment are tokenised separately and concatenated, so segment
boundaries are exact token boundaries and generation (which starts right after the prompt
tokens) sees the same ids as training. Chat rows use the tokenizer's chat template where it
has one; tokens of assistant turns are found by rendering growing prefixes of the
conversation. Truncation is counted, never silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.spec.errors import DataError
from workbench.spec.mlflow_names import DATA_PREFIX

IGNORE_INDEX = -100
SEGMENT_IDS = {"prompt": 0, "answer": 1, "explanation": 2, "assistant": 1}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX outside the completion / assistant turns
    segments: list[int]  # SEGMENT_IDS per token
    truncated: bool = False


@dataclass
class EncodeStats:
    rows: int = 0
    truncated_rows: int = 0
    dropped_rows: int = 0  # nothing left to train on after truncation
    tokens: int = 0
    completion_tokens: int = 0
    examples_dropped: list[int] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        return {
            f"{DATA_PREFIX}rows": float(self.rows),
            f"{DATA_PREFIX}truncated_rows": float(self.truncated_rows),
            f"{DATA_PREFIX}dropped_rows": float(self.dropped_rows),
            f"{DATA_PREFIX}tokens": float(self.tokens),
            f"{DATA_PREFIX}completion_tokens": float(self.completion_tokens),
        }


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, row: Row | ChatRow) -> list[int]:
    """Token ids generation is conditioned on (prompt, or chat up to the answer turn)."""
    if isinstance(row, ChatRow):
        return _chat_ids(tokenizer, row.prompt_messages, add_generation_prompt=True)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + _ids(tokenizer, row.prompt)


def _chat_ids(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(
            list(messages), tokenize=True, add_generation_prompt=add_generation_prompt
        )
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)
    # No template: "role: content" lines, each assistant turn closed by the end token (the
    # model must learn to stop). The end token is part of the rendering, so the generation
    # prompt of a later turn shows the earlier answers exactly as training saw them. Each
    # message is tokenized on its own, so a prefix of the conversation renders as a prefix.
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for m in messages:
        ids += _ids(tokenizer, f"{m['role']}: {m['content']}\n")
        if m["role"] == "assistant" and tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    if add_generation_prompt:
        ids += _ids(tokenizer, "assistant:")
    return ids


def encode_row(tokenizer, row: Row | ChatRow, max_length: int) -> Encoded:
    eos = tokenizer.eos_token_id
    if isinstance(row, PreferenceRow):
        raise DataError(
            "preference rows (prompt/chosen/rejected) need a preference method, not SFT"
        )
    if isinstance(row, Row):
        ids = prompt_ids(tokenizer, row)
        labels = [IGNORE_INDEX] * len(ids)
        segments = [SEGMENT_IDS["prompt"]] * len(ids)
        for name, text in row.segments:
            seg = _ids(tokenizer, text)
            ids += seg
            labels += seg
            segments += [SEGMENT_IDS.get(name, SEGMENT_IDS["answer"])] * len(seg)
        if eos is not None:
            # The end token belongs to the answer: learning when to stop is part of answering.
            ids.append(eos)
            labels.append(eos)
            segments.append(SEGMENT_IDS["answer"])
    else:
        ids, labels, segments = [], [], []
        for i, message in enumerate(row.messages):
            if message["role"] != "assistant":
                continue
            before = _chat_ids(tokenizer, row.messages[:i], add_generation_prompt=True)
            upto = _chat_ids(tokenizer, row.messages[: i + 1], add_generation_prompt=False)
            # Earlier turns must render the same inside later prefixes (``ids`` holds them).
            if upto[: len(before)] != before or before[: len(ids)] != ids:
                raise DataError(
                    "the chat template renders a conversation prefix differently from the whole "
                    "conversation, so assistant tokens cannot be located; "
                    "use prompt/completion rows"
                )
            context = before[len(ids) :]
            ids += context
            labels += [IGNORE_INDEX] * len(context)
            segments += [SEGMENT_IDS["prompt"]] * len(context)
            answer = upto[len(before) :]
            ids += answer
            labels += answer
            segments += [SEGMENT_IDS["assistant"]] * len(answer)
    truncated = len(ids) > max_length
    if truncated:
        ids, labels, segments = ids[:max_length], labels[:max_length], segments[:max_length]
    return Encoded(ids, labels, segments, truncated)


def encode_rows(
    tokenizer, rows: Sequence[Row | ChatRow], max_length: int
) -> tuple[list[Encoded], EncodeStats]:
    """Encode rows; rows with no trainable token left after truncation are dropped and counted."""
    stats = EncodeStats()
    out: list[Encoded] = []
    for index, row in enumerate(rows):
        enc = encode_row(tokenizer, row, max_length)
        stats.rows += 1
        stats.truncated_rows += int(enc.truncated)
        trainable = sum(label != IGNORE_INDEX for label in enc.labels)
        if trainable == 0:
            stats.dropped_rows += 1
            stats.examples_dropped.append(index)
            continue
        stats.tokens += len(enc.input_ids)
        stats.completion_tokens += trainable
        out.append(enc)
    if not out:
        raise DataError(
            f"no row has a completion token left within train.max_length={max_length}; "
            "raise train.max_length or shorten the prompts"
        )
    return out, stats


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; labels are shifted later by the loss (label t scores token t)."""
    width = max(len(e.input_ids) for e in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    segments = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(batch):
        k = len(e.input_ids)
        input_ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        segments[i, :k] = torch.tensor(e.segments)
        attention[i, :k] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "segments": segments,
        "attention_mask": attention,
    }
