"""Weight-conditioned training: the preference weights written into the prompt as text.

A weight-conditioned run (method ``conditioned-sft``) trains one model on every preference
at once, in the spirit of rewards-in-context (Yang et al., 2024) and directional preference
alignment (Wang et al., 2024): each training example draws its own **training weights** over
the loss terms from a Dirichlet distribution, the prompt starts with those weights as text,
and the example's loss is the terms weighted by them. Evaluated with a prefix, the one model
answers as a run trained at those weights would, so a front is read off it without
retraining (:mod:`workbench.fronts.conditioned`).

The prefix names each term with its weight in whole percent, e.g. ``<w answer 30 brevity
70>`` and a newline. Whole percents are single tokens of the tiny base's vocabulary (numbers
below 100 are in its corpus); the newline ends the prefix on a pre-tokenizer boundary, so the
prefix tokenised alone and then the prompt give the same ids as the two tokenised together
(generation reads the prefixed prompt as one string, training inserts the prefix's ids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from workbench.data.rows import Row
from workbench.spec.errors import DataError

PERCENT = 100


def percentages(weights: Mapping[str, float]) -> dict[str, int]:
    """Weights normalised to whole percents summing to 100 (largest remainders round up), so
    the prefix states exactly the weights the loss uses."""
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"weights {dict(weights)}: at least one must be positive")
    shares = {name: PERCENT * w / total for name, w in weights.items()}
    out = {name: int(np.floor(s)) for name, s in shares.items()}
    short = PERCENT - sum(out.values())
    by_remainder = sorted(shares, key=lambda n: shares[n] - out[n], reverse=True)
    for name in by_remainder[:short]:
        out[name] += 1
    return out


def weight_prefix(percent: Mapping[str, int]) -> str:
    """The text put before a prompt: ``<w answer 30 brevity 70>`` and a newline."""
    return "<w " + " ".join(f"{name} {value}" for name, value in percent.items()) + ">\n"


def sample_percentages(
    rng: np.random.Generator, names: Sequence[str], alpha: float
) -> dict[str, int]:
    """One draw of training weights over ``names`` from Dirichlet(alpha, ..., alpha), in
    percents (a draw that rounds to 0 everywhere but one term keeps that term alone)."""
    draw = rng.dirichlet(np.full(len(names), float(alpha)))
    return percentages(dict(zip(names, draw.tolist())))


def conditioned_row(row, percent: Mapping[str, int]) -> Row:
    """``row`` with its prompt preceded by the weight prefix (prompt/completion rows only)."""
    if not isinstance(row, Row):
        raise DataError(
            "weight-conditioned training writes the weights before the prompt and "
            "needs prompt/completion rows; convert the chat rows to prompt/completion"
        )
    return dataclasses.replace(row, prompt=weight_prefix(percent) + row.prompt)
