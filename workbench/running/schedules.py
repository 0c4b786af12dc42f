"""The built-in learning-rate schedules (``components.SCHEDULERS``).

Each is ``factor(step, warmup_steps, total_steps, **settings) -> multiplier of the peak
rate``, pure Python (a ``LambdaLR`` applies it); the built-in ones have no settings. Warm-up
is linear from 1/warmup to 1 over the first ``warmup_steps`` steps, the same for every
schedule.
"""

from __future__ import annotations

import math


def _warmup(step: int, warmup: int) -> float | None:
    return (step + 1) / warmup if warmup and step < warmup else None


def _progress(step: int, warmup: int, total: int) -> float:
    return min(1.0, (step - warmup) / max(1, total - warmup))


def constant(step: int, warmup: int, total: int) -> float:
    w = _warmup(step, warmup)
    return 1.0 if w is None else w


def linear(step: int, warmup: int, total: int) -> float:
    w = _warmup(step, warmup)
    return max(0.0, 1.0 - _progress(step, warmup, total)) if w is None else w


def cosine(step: int, warmup: int, total: int) -> float:
    w = _warmup(step, warmup)
    return 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup, total))) if w is None else w
