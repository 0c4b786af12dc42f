"""Batches that do not depend on how many processes train.

Each micro-step draws one *global* batch of ``batch_size * world_size`` rows from a seeded
permutation; rank ``r`` takes its slice. So 2 processes x batch B see exactly the rows that
1 process x batch 2B sees, which makes DDP runs comparable with single-process runs (a
DistributedSampler would deal rows out differently).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    def __init__(self, n_rows: int, batch_size: int, micro_steps: int, seed: int,
                 rank: int = 0, world_size: int = 1, start_micro_step: int = 0):
        self.n_rows, self.batch_size, self.micro_steps = n_rows, batch_size, micro_steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_micro_step = start_micro_step

    def __len__(self) -> int:
        # The whole run's length, also when resuming: Lightning restores its own batch
        # counters from the checkpoint and counts on to this total.
        return self.micro_steps

    def global_batches(self):
        per_global = self.batch_size * self.world_size
        generator = torch.Generator().manual_seed(self.seed)
        order: list[int] = []
        for _ in range(self.micro_steps):
            while len(order) < per_global:
                order += torch.randperm(self.n_rows, generator=generator).tolist()
            yield order[:per_global]
            order = order[per_global:]

    def __iter__(self):
        for step, batch in enumerate(self.global_batches()):
            if step < self.start_micro_step:
                continue
            yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


class RepeatedRoundsSampler(GlobalBatchSampler):
    """:class:`GlobalBatchSampler`'s batches in rounds of ``round_size`` (an optimizer step's
    micro-batches), each round served ``repeats`` times in a row.

    A method that trains ``repeats`` optimizer steps on one batch of sampled completions
    (GRPO's num_iterations) sees the same prompts again exactly when it reuses their
    samples, so the batch in hand always matches its buffer, also after a resume (the
    position is a micro-step of this sequence, as for the plain sampler).
    """

    def __init__(self, n_rows: int, batch_size: int, micro_steps: int, seed: int, *, round_size: int,
                 repeats: int, rank: int = 0, world_size: int = 1, start_micro_step: int = 0):
        super().__init__(n_rows, batch_size, micro_steps, seed, rank, world_size, start_micro_step)
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
