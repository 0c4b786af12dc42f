"""Preference pairs from the built-in tasks, so preference methods run with no dataset.

The chosen completion is the task's correct one; the rejected one is the same answer made
wrong in a way a program can tell: its items out of order, one item dropped, or a number
off by one. The corruption is drawn from a seed per row, so pairs are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from workbench.data.rows import PreferenceRow, Row


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
        choices.append(items[:i] + [str(int(items[i]) + rng.choice((-1, 1)))] + items[i + 1:])
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
            rejected = rejected + row.completion[len(row.answer):]
        out.append(PreferenceRow(row.prompt, chosen, rejected, source=row))
    return out
