"""``random``: a uniform sample of the budget, the baseline every selector is compared with.

Idea: any subset drawn without looking at the rows. A selector that does not beat it at
the same budget has not earned its cost.
"""

from __future__ import annotations

import random

from workbench.data.selection.selecting import Candidates, Selection, top_rows
from workbench.spec.entries import SelectorParams


class RandomParams(SelectorParams):
    """A uniform random sample of ``budget`` rows (seeded by ``train.seed``)."""


def select_random(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: a uniform draw in [0, 1) per row; the ``count`` highest are kept."""
    rng = random.Random(f"random-selection:{seed}")
    scores = [rng.random() for _ in candidates.rows]
    return Selection(settings.name, top_rows(scores, count), scores)
