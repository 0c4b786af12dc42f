"""Encoding for the row kinds beyond supervised rows: preference pairs, unpaired labelled
completions, and prompts alone (see ``registry.ROW_KINDS``).

Each completion is tokenised exactly as a supervised row (:func:`encode_row`), so a chosen
completion scores the same tokens under SFT and under a preference method. A pair's two
completions go into one batch (chosen rows first, then rejected), so a method scores both
in one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.data.encode import (
    IGNORE_INDEX,
    Encoded,
    EncodeStats,
    collate,
    encode_row,
    prompt_ids,
    template_tokens,
)
from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.spec.errors import DataError


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded
    scores: tuple[tuple[str, float, float], ...] = ()  # PreferenceRow.scores


@dataclass
class EncodedUnpaired:
    encoded: Encoded
    desirable: bool


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    index: int  # position of the row in the training rows (its reference fields)


def _trainable(enc: Encoded) -> int:
    return sum(label != IGNORE_INDEX for label in enc.labels)


def _need_pairs(rows: Sequence) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, PreferenceRow):
            raise DataError(
                "this method trains on prompt/chosen/rejected rows; this row is "
                f"{type(row).__name__}. Supply preference pairs",
                row=i,
            )


def _finish(stats: EncodeStats, out: list, max_length: int) -> tuple[list, EncodeStats]:
    if not out:
        raise DataError(
            f"no row has a completion token left within train.max_length={max_length}; "
            "raise train.max_length or shorten the prompts"
        )
    return out, stats


def _count(stats: EncodeStats, *encoded: Encoded) -> bool:
    """Add ``encoded`` to ``stats``; False when one of them has nothing left to train on."""
    stats.truncated_rows += int(any(e.truncated for e in encoded))
    if any(_trainable(e) == 0 for e in encoded):
        stats.dropped_rows += 1
        return False
    for e in encoded:
        stats.tokens += len(e.input_ids)
        stats.completion_tokens += _trainable(e)
    return True


def encode_pairs(tokenizer, rows: Sequence[PreferenceRow], max_length: int):
    """(list of :class:`EncodedPair`, stats); a pair is dropped if either side has no
    completion token left after truncation."""
    _need_pairs(rows)
    stats, out = EncodeStats(template_tokens=template_tokens(tokenizer, rows)), []
    for index, row in enumerate(rows):
        stats.rows += 1
        pair = EncodedPair(
            encode_row(tokenizer, row.completion_row(row.chosen), max_length),
            encode_row(tokenizer, row.completion_row(row.rejected), max_length),
            row.scores,
        )
        if _count(stats, pair.chosen, pair.rejected):
            out.append(pair)
        else:
            stats.examples_dropped.append(index)
    return _finish(stats, out, max_length)


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch of 2n rows: the n chosen completions, then the n rejected."""
    out = collate([p.chosen for p in batch] + [p.rejected for p in batch], pad_id)
    out["n_pairs"] = torch.tensor(len(batch))
    return out


def encode_scored_pairs(tokenizer, rows: Sequence[PreferenceRow], max_length: int):
    """As :func:`encode_pairs`, for pairs that all carry scores on the same attributes."""
    _need_pairs(rows)
    names = [name for name, _, _ in rows[0].scores] if rows else []
    for i, row in enumerate(rows):
        if not row.scores:
            raise DataError(
                "this method weights per-attribute scores; this pair has none. Give "
                "'chosen_scores' and 'rejected_scores'",
                row=i,
            )
        if [name for name, _, _ in row.scores] != names:
            raise DataError(
                f"scores attributes {[n for n, _, _ in row.scores]} differ from the first "
                f"row's {names}; score every pair on the same attributes",
                row=i,
            )
    return encode_pairs(tokenizer, rows, max_length)


def collate_scored_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """:func:`collate_pairs` plus ``score/<attribute>``: (n, 2) float tensors, each pair's
    chosen and rejected score."""
    out = collate_pairs(batch, pad_id)
    for k, (name, _, _) in enumerate(batch[0].scores):
        out[f"score/{name}"] = torch.tensor([p.scores[k][1:] for p in batch], dtype=torch.float32)
    return out


def encode_unpaired(tokenizer, rows: Sequence[PreferenceRow | Row], max_length: int):
    """Each preference pair gives a desirable (chosen) and an undesirable (rejected) row;
    a plain prompt/completion row counts as desirable."""
    stats, out = EncodeStats(template_tokens=template_tokens(tokenizer, rows)), []
    for index, row in enumerate(rows):
        if isinstance(row, PreferenceRow):
            items = [
                (row.completion_row(row.chosen), True),
                (row.completion_row(row.rejected), False),
            ]
        elif isinstance(row, (Row, ChatRow)):
            items = [(row, True)]
        else:
            raise DataError(f"cannot train on a {type(row).__name__} as an unpaired row", row=index)
        stats.rows += 1
        for item, desirable in items:
            enc = encode_row(tokenizer, item, max_length)
            if _count(stats, enc):
                out.append(EncodedUnpaired(enc, desirable))
            else:
                stats.examples_dropped.append(index)
    return _finish(stats, out, max_length)


def collate_unpaired(batch: Sequence[EncodedUnpaired], pad_id: int) -> dict[str, torch.Tensor]:
    out = collate([b.encoded for b in batch], pad_id)
    out["desirable"] = torch.tensor([b.desirable for b in batch], dtype=torch.bool)
    return out


def encode_prompts(tokenizer, rows: Sequence, max_length: int):
    """Prompt token ids only (the completion is generated during training)."""
    stats = EncodeStats(template_tokens=template_tokens(tokenizer, rows, with_answer=False))
    out = []
    for index, row in enumerate(rows):
        prompt_row = row.completion_row("") if isinstance(row, PreferenceRow) else row
        ids = prompt_ids(tokenizer, prompt_row)
        stats.rows += 1
        if len(ids) > max_length:
            stats.truncated_rows += 1
            ids = ids[-max_length:]  # keep the end: it is what the completion continues
        stats.tokens += len(ids)
        out.append(EncodedPrompt(ids, index))
    return _finish(stats, out, max_length)


def collate_prompts(batch: Sequence[EncodedPrompt], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts (generation continues from the last column)."""
    width = max(len(b.input_ids) for b in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        input_ids[i, width - len(b.input_ids) :] = torch.tensor(b.input_ids)
        attention[i, width - len(b.input_ids) :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "row_index": torch.tensor([b.index for b in batch]),
    }
