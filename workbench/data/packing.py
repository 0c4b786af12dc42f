"""Padding-free batches: a right-padded batch's rows laid end to end in a few sequences.

``train.padding_free`` feeds the model the rows of a micro-batch packed, not padded: each
row's tokens follow the previous row's in one sequence, its position ids restart at 0, and
the model confines attention to each row (transformers builds a block-diagonal causal mask
from position ids that restart, or hands the row boundaries to a varlen flash-attention
kernel; ``workbench.models.packed_attention`` says which attention does what). Rows go into
sequences of at most ``max_tokens`` tokens, first-fit, longest first; the sequences are
padded at their ends to one width (a pad after the last row cannot change it: attention is
causal, and the pad positions start a row of their own).

What the model returns per position is then read back into the padded batch's shifted
layout (:meth:`PackedRows.unpack`: (sequences, width - 1) -> (rows, T - 1)), so the loss
functions see exactly the per-token log-probs and masks of the padded batch: only B x T
numbers move, never a B x T x V tensor. :class:`PaddedRows` is the same interface for the
batch as collated, so a module reads both layouts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.data.encode import IGNORE_INDEX


@dataclass
class PaddedRows:
    """A right-padded batch as collated: the model reads ``input_ids`` and ``attention_mask``."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position ``values`` (B, T - 1) in the batch's shifted layout: already there."""
        return values


@dataclass
class PackedRows:
    """A batch's rows packed into ``k`` sequences of one width ``W``.

    ``labels`` holds each row's labels where its tokens are, except at the row's first token
    (the last position of the row before it would predict it): the shift by one the loss
    functions apply then scores each row on its own tokens only.
    """

    input_ids: torch.Tensor  # (k, W)
    position_ids: torch.Tensor  # (k, W): 0, 1, ... from each row's first token
    labels: torch.Tensor  # (k, W)
    # For each position of the padded batch's shifted layout (B, T - 1): where it is in the
    # packed shifted layout, flattened ((k * (W - 1),) indices), and whether the row has it.
    source: torch.Tensor
    present: torch.Tensor
    tokens: int  # the rows' tokens (the rest of the k x W positions are padding)

    def model_inputs(self) -> dict:
        # No attention mask: transformers derives the rows from the restarting position ids
        # only when it is given none, and only without a KV cache (with one, every position
        # would attend to the whole sequence).
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False}

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position ``values`` (k, W - 1) of the packed shifted layout, in the padded
        batch's shifted layout (B, T - 1), 0 (False) where a row has no position."""
        return values.reshape(-1)[self.source].masked_fill(~self.present, 0)

    @property
    def pad_fraction(self) -> float:
        """The share of the sequences' positions that are padding."""
        return 1.0 - self.tokens / self.input_ids.numel()


def padded_lengths(attention_mask: torch.Tensor) -> list[int]:
    """Each row's length in a right-padded batch (ValueError if a row is not right-padded)."""
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions < lengths.unsqueeze(1)):
        raise ValueError("padding-free batches pack right-padded rows; this batch is not")
    return lengths.tolist()


def first_fit(lengths: list[int], max_tokens: int | None) -> list[list[int]]:
    """Rows (indices) grouped into sequences of at most ``max_tokens`` tokens: longest first,
    each into the first sequence with room (first-fit decreasing). A row longer than
    ``max_tokens`` gets a sequence of its own; ``max_tokens`` None puts every row in one."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if max_tokens is None:
        return [order]
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        at = next((b for b, left in enumerate(room) if left >= lengths[i]), None)
        if at is None:
            bins.append([i])
            room.append(max_tokens - lengths[i])
        else:
            bins[at].append(i)
            room[at] -= lengths[i]
    return bins


def pack_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    pad_id: int,
    max_tokens: int | None = None,
) -> PackedRows:
    """The rows of a right-padded batch, packed (:func:`first_fit`) into sequences of at most
    ``max_tokens`` tokens (None: all in one)."""
    lengths = padded_lengths(attention_mask)
    bins = first_fit(lengths, max_tokens)
    width = max(max(sum(lengths[i] for i in b) for b in bins), 2)
    n, t = attention_mask.shape
    # The layout as index arrays on the CPU (a few numpy steps a row), then a few tensor ops
    # on the batch's device: where each packed position's token comes from in the flattened
    # batch (-1: padding), whether it starts a row, its position id, and where each shifted
    # position of the padded layout went.
    taken = np.full(len(bins) * width, -1, dtype=np.int64)
    starts = np.zeros(len(bins) * width, dtype=bool)
    positions = np.zeros(len(bins) * width, dtype=np.int64)
    source = np.zeros(n * max(t - 1, 0), dtype=np.int64)
    for j, rows in enumerate(bins):
        offset = j * width
        for i in rows:
            length = lengths[i]
            taken[offset : offset + length] = np.arange(i * t, i * t + length)
            starts[offset] = True
            positions[offset : offset + length] = np.arange(length)
            # Shifted position s of row i (its token s + 1 predicted from token s) sits at
            # offset + s of the shifted layout, whose rows are one shorter.
            shifted, row = offset - j, i * (t - 1)
            source[row : row + length - 1] = np.arange(shifted, shifted + length - 1)
            offset += length
        # The pad after the last row counts from 0 as a row of its own.
        positions[offset : (j + 1) * width] = np.arange((j + 1) * width - offset)
    device = input_ids.device
    taken_t = torch.from_numpy(taken).to(device)
    real = taken_t >= 0
    at = taken_t.clamp(min=0)
    packed_ids = torch.where(real, input_ids.reshape(-1)[at], pad_id)
    # A row's first token is never a target: the position before it belongs to another row.
    scored = real & ~torch.from_numpy(starts).to(device)
    packed_labels = torch.where(scored, labels.reshape(-1)[at], IGNORE_INDEX)
    present = torch.arange(max(t - 1, 0), device=device) < (
        torch.tensor(lengths, device=device) - 1
    ).unsqueeze(1)
    return PackedRows(
        packed_ids.reshape(len(bins), width),
        torch.from_numpy(positions).to(device).reshape(len(bins), width),
        packed_labels.reshape(len(bins), width),
        torch.from_numpy(source).to(device).reshape(n, max(t - 1, 0)),
        present,
        sum(lengths),
    )
