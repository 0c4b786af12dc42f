"""Sampling the next token from one uniform number per row (the inverse of its CDF).

transformers' ``generate`` samples with ``torch.multinomial``, which on a CPU draws a
random number for every vocabulary entry of every row at every step. With a 49k vocabulary
and 8 rows that took 8 ms a step (0.5 s of 4.9 s of sampling 8 completions of 64 tokens at
SmolLM2-135M's shape, torch profiler, 2 cores), a quarter of the time the matrix products
took. :func:`sampling_processors` gives ``generate`` the same temperature, top-k
and top-p warpers sampling would apply, then :class:`InverseCdfDraw`, which draws each row's
token from the warped distribution with one uniform number, ``torch.rand`` on the global RNG
(so a seeded call is reproducible), and leaves only that token possible; ``generate`` runs
with ``do_sample=False``, and its argmax takes the drawn token.

The distribution is the one ``multinomial`` samples (tested: frequencies over many draws
against the probabilities); the draws themselves differ from ``multinomial``'s.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


class InverseCdfDraw(LogitsProcessor):
    """Draws each row's next token from ``softmax(scores)`` and returns scores of 0 for it
    and -inf for every other token."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.full_like(scores, float("-inf")).scatter_(1, draw_tokens(scores), 0.0)


def draw_tokens(scores: torch.Tensor) -> torch.Tensor:
    """(rows, 1) token ids, each drawn from its row's ``softmax(scores)`` (a token of score
    -inf is never drawn)."""
    # float64 running sums: float32's error over a 49k-entry sum would reach the smallest
    # probabilities a vocabulary holds.
    cdf = torch.softmax(scores.float(), dim=-1).double().cumsum(dim=-1)
    total = cdf[:, -1:]
    uniform = torch.rand(total.shape, dtype=torch.float64, device=scores.device) * total
    # rand < 1, but the product can round up to the total: keep it below the last step.
    uniform = torch.minimum(uniform, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, uniform, right=True).clamp_(max=scores.shape[-1] - 1)


def sampling_processors(temperature: float, top_k: int, top_p: float) -> LogitsProcessorList:
    """What ``generate(do_sample=True, temperature=..., top_k=..., top_p=...)`` would warp the
    scores with, in its order, then :class:`InverseCdfDraw`: run with ``do_sample=False``."""
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(InverseCdfDraw())
    return processors
