"""Preference pairs from the built-in tasks, so preference methods run with no dataset.

The chosen completion is the task's correct one; the rejected one is the same answer made
wrong in a way a program can tell: its items out of order, one item dropped, or a number
off by one. The corruption is drawn from a seed per row, so pairs are reproducible.

:func:`scored_pairs` makes multi-attribute pairs whose attributes conflict (for MODPO): the
whole answer against the answer cut short, each scored by every objective of the task, so
correctness prefers one completion and brevity the other. Which completion is chosen is a
preference label on the first attribute drawn from a Bradley-Terry model of its scores
(see :data:`LABEL_TEMPERATURE`), as a human label would be: both orders occur, and a
preference method learns a finite reward for the attribute rather than an ever-growing one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from workbench.data.rows import PreferenceRow, Row
from workbench.spec.objective_source import direction_sign


def corrupt_answer(answer: str, rng: random.Random) -> str:
    """A wrong variant of ``answer`` (whitespace-separated items), never equal to it."""
    items = answer.split()
    lead = answer[: len(answer) - len(answer.lstrip())]
    choices = []
    if len(items) > 1 and items != items[::-1]:
        choices.append(items[::-1])
    if len(items) > 1:
        choices.append(items[:-1])
    numeric = [i for i, item in enumerate(items) if item.lstrip("-").isdigit()]
    if numeric:
        i = rng.choice(numeric)
        choices.append(items[:i] + [str(int(items[i]) + rng.choice((-1, 1)))] + items[i + 1 :])
    if not choices:
        choices.append(items + items[-1:] if items else ["?"])
    return lead + " ".join(rng.choice(choices))


def preference_pairs(rows: Sequence[Row], seed: int) -> list[PreferenceRow]:
    """One pair per row: (prompt, correct completion, corrupted completion)."""
    out = []
    for i, row in enumerate(rows):
        rng = random.Random(f"pair:{seed}:{i}:{row.prompt}")
        chosen = row.completion
        rejected = corrupt_answer(row.answer, rng)
        if row.completion != row.answer:  # keep segments after the answer (e.g. an explanation)
            rejected = rejected + row.completion[len(row.answer) :]
        out.append(PreferenceRow(row.prompt, chosen, rejected, source=row))
    return out


# Temperature of the Bradley-Terry labels of scored pairs, in units of the labelling
# attribute's score: on `order`, the whole answer is chosen over it cut by one item of ten
# (correctness 0.1 apart) with probability sigmoid(0.1) = 0.52, over one item left (0.9
# apart) with 0.71. The labels' implied reward, score / temperature, then gains less per item
# than the length score loses (1 per item), so a MODPO sweep trades the two across its
# weights; at 0.1 (10 per unit of correctness) the cut answer was chosen almost only when one
# or two items were cut, and the sweep's policies did not move with the weight.
LABEL_TEMPERATURE = 1.0

# An attribute of a completion: (name, direction "max"|"min", score(completion, row)).
Scorer = tuple[str, str, Callable[[str, Row], float]]


def scored_pairs(
    rows: Sequence[Row],
    scorers: Sequence[Scorer],
    seed: int,
    temperature: float = LABEL_TEMPERATURE,
) -> list[PreferenceRow]:
    """One multi-attribute pair per row: the whole completion against its answer cut short
    after k items (k uniform in 1 .. items - 1; a corrupted answer when the answer has one
    item), both scored by every scorer (``PreferenceRow.scores``).

    The first scorer labels the pair: the completion it scores better by a gap g (in its
    direction) is chosen with probability sigmoid(g / temperature).
    """
    if not scorers:
        raise ValueError("scored_pairs needs at least one scorer (the labelling attribute)")
    out = []
    for i, row in enumerate(rows):
        rng = random.Random(f"scored-pair:{seed}:{i}:{row.prompt}")
        items = row.answer.split()
        if len(items) > 1:
            lead = row.answer[: len(row.answer) - len(row.answer.lstrip())]
            short = lead + " ".join(items[: rng.randint(1, len(items) - 1)])
        else:
            short = corrupt_answer(row.answer, rng)
        short += row.completion[len(row.answer) :]  # keep segments after the answer
        a, b = row.completion, short
        scores = [(name, direction, fn(a, row), fn(b, row)) for name, direction, fn in scorers]
        _, direction, score_a, score_b = scores[0]
        gap = (score_a - score_b) * direction_sign(direction)
        keep = rng.random() < 1 / (1 + math.exp(-gap / temperature))
        chosen, rejected = (a, b) if keep else (b, a)
        out.append(
            PreferenceRow(
                row.prompt,
                chosen,
                rejected,
                source=row,
                scores=tuple(
                    (name, sa, sb) if keep else (name, sb, sa) for name, _, sa, sb in scores
                ),
            )
        )
    return out
