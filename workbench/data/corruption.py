"""Label noise on purpose, for teaching: corrupt a given share of a built-in task's training
answers (seeded), and say which rows, so a selector's precision and recall on the bad rows
can be measured (``data.corrupt_fraction``).

A corrupted answer is a wrong variant a program can tell from the right one (items out of
order, one dropped, a number off by one: :func:`workbench.data.pairs.corrupt_answer`, the
corruption preference pairs reject); only the ``answer`` segment changes, so an ``explain``
row keeps its explanation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from workbench.data.pairs import corrupt_answer
from workbench.data.rows import Row


def corrupted_indices(n_rows: int, fraction: float, seed: int) -> list[int]:
    """Which of ``n_rows`` training rows ``fraction`` corrupts under ``seed``: a uniform
    sample of ``round(fraction * n_rows)`` rows, ascending."""
    rng = random.Random(f"corrupt-labels:{seed}")
    return sorted(rng.sample(range(n_rows), round(fraction * n_rows)))


def corrupt_labels(rows: Sequence[Row], fraction: float, seed: int) -> list[Row]:
    """``rows`` with the answers of :func:`corrupted_indices` made wrong (the others as
    they are)."""
    out = list(rows)
    for i in corrupted_indices(len(rows), fraction, seed):
        row = out[i]
        rng = random.Random(f"corrupt-label:{seed}:{i}:{row.prompt}")
        wrong = corrupt_answer(row.answer, rng)
        segments = tuple((name, wrong if name == "answer" else text) for name, text in row.segments)
        out[i] = dataclasses.replace(row, segments=segments)
    return out


def dropped_row_quality(dropped: Sequence[int], corrupted: Sequence[int]) -> dict[str, float]:
    """How well the rows a selector dropped find the corrupted ones: ``precision`` (the
    share of dropped rows that were corrupted; chance is the corrupted share) and ``recall``
    (the share of corrupted rows dropped). 0 where there is nothing to divide by."""
    hits = len(set(dropped) & set(corrupted))
    return {
        "precision": hits / len(dropped) if dropped else 0.0,
        "recall": hits / len(corrupted) if corrupted else 0.0,
    }
