"""Batches that do not depend on how many processes train.

Each micro-step draws one *global* batch of ``batch_size * world_size`` rows from a seeded
permutation; rank ``r`` takes its slice. So 2 processes x batch B see exactly the rows that
1 process x batch 2B sees, which makes DDP runs comparable with single-process runs (a
DistributedSampler would deal rows out differently).

With ``lengths`` (``train.group_by_length``) each epoch's order is grouped by length before it
is cut into global batches (:func:`group_by_length`), so a batch holds rows of similar length
and the padding collate adds shrinks; the rest (epochs, resume, rank slices) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Sampler

# A mega-batch holds at most this many global batches (as Hugging Face's LengthGroupedSampler).
MAX_MEGA_BATCHES = 50


def row_length(row) -> int:
    """Tokens ``row`` (an encoded row of any built-in row kind) puts into its batch's widest
    sequence. A pair counts the longer of prompt+chosen and prompt+rejected, not their sum:
    both completions are padded to one width in one batch (:func:`collate_pairs`), so the
    longer side is what sets the pad of the whole batch."""
    if hasattr(row, "chosen") and hasattr(row, "rejected"):
        return max(row_length(row.chosen), row_length(row.rejected))
    if hasattr(row, "encoded"):  # an unpaired completion and its label
        return row_length(row.encoded)
    if hasattr(row, "input_ids"):
        return len(row.input_ids)
    raise TypeError(
        f"train.group_by_length cannot tell the length of a {type(row).__name__} row; "
        "give it input_ids or override WorkbenchModule.row_lengths"
    )


def group_by_length(
    order: list[int], lengths: Sequence[int], per_global: int, generator: torch.Generator
) -> list[int]:
    """``order`` (one epoch's shuffled rows) regrouped so each ``per_global`` run of it holds
    rows of similar length: cut into mega-batches of ``k * per_global`` rows (k up to
    :data:`MAX_MEGA_BATCHES`, and small enough for at least 4 mega-batches an epoch where the
    rows allow, so which rows share a batch still changes between epochs), each sorted
    longest first (ties keep the shuffled order), cut into global batches, and the full
    batches shuffled with ``generator``. The same rows, each once; an epoch's last, partial
    batch stays last (it is completed by the next epoch's first rows, as without grouping)."""
    k = max(1, min(len(order) // (4 * per_global), MAX_MEGA_BATCHES))
    mega = k * per_global
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + per_global] for j in range(0, len(chunk), per_global)]
    tail = batches.pop() if batches and len(batches[-1]) < per_global else []
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [i for b in shuffled for i in batches[b]] + tail


class GlobalBatchSampler(Sampler[list[int]]):
    """``lengths``: each row's length (:func:`row_length`) to group batches by, or None for
    plain shuffled batches.

    A global batch never holds more rows than there are: with fewer rows than
    ``batch_size * world_size`` each rank takes ``n_rows // world_size`` (one process: every
    row once, a full batch, as a PyTorch DataLoader's batch over a smaller dataset is).
    Filling the batch from the next epochs instead would count some rows twice in a step and
    change which rows each step sees.
    """

    def __init__(
        self,
        n_rows: int,
        batch_size: int,
        micro_steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_micro_step: int = 0,
        lengths: Sequence[int] | None = None,
    ):
        if n_rows < world_size:
            raise ValueError(f"{n_rows} training rows cannot give each of {world_size} ranks one")
        batch_size = min(batch_size, n_rows // world_size)
        self.n_rows, self.batch_size, self.micro_steps = n_rows, batch_size, micro_steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_micro_step = start_micro_step
        if lengths is not None and len(lengths) != n_rows:
            raise ValueError(f"{len(lengths)} lengths for {n_rows} rows")
        self.lengths = lengths

    def __len__(self) -> int:
        # The whole run's length, also when resuming: Lightning restores its own batch
        # counters from the checkpoint and counts on to this total.
        return self.micro_steps

    def epoch_order(self, generator: torch.Generator) -> list[int]:
        """One epoch: every row once, shuffled (and grouped by length with ``lengths``)."""
        order = torch.randperm(self.n_rows, generator=generator).tolist()
        if self.lengths is None:
            return order
        return group_by_length(order, self.lengths, self.batch_size * self.world_size, generator)

    def global_batches(self):
        per_global = self.batch_size * self.world_size
        generator = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        for _ in range(self.micro_steps):
            while len(order) < per_global:
                order += self.epoch_order(generator)
            yield order[:per_global]
            order = order[per_global:]

    def __iter__(self):
        for step, batch in enumerate(self.global_batches()):
            if step < self.start_micro_step:
                continue
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


class RepeatedRoundsSampler(GlobalBatchSampler):
    """:class:`GlobalBatchSampler`'s batches in rounds of ``round_size`` (an optimizer step's
    micro-batches), each round served ``repeats`` times in a row.

    A method that trains ``repeats`` optimizer steps on one batch of sampled completions
    (GRPO's num_iterations) sees the same prompts again exactly when it reuses their
    samples, so the batch in hand always matches its buffer, also after a resume (the
    position is a micro-step of this sequence, as for the plain sampler).
    """

    def __init__(
        self,
        n_rows: int,
        batch_size: int,
        micro_steps: int,
        seed: int,
        *,
        round_size: int,
        repeats: int,
        rank: int = 0,
        world_size: int = 1,
        start_micro_step: int = 0,
        lengths: Sequence[int] | None = None,
    ):
        super().__init__(
            n_rows, batch_size, micro_steps, seed, rank, world_size, start_micro_step, lengths
        )
        self.round_size, self.repeats = round_size, repeats

    def global_batches(self):
        fresh = super().global_batches()  # micro_steps batches: more than the rounds need
        served = 0
        while served < self.micro_steps:
            round_batches = [next(fresh) for _ in range(self.round_size)]
            for _ in range(self.repeats):
                for batch in round_batches:
                    if served == self.micro_steps:
                        return
                    yield batch
                    served += 1
