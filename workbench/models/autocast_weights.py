"""Weights cast to autocast's precision once for a block of many forward passes.

Lightning runs a mixed-precision training step under ``torch.autocast(...,
cache_enabled=False)``: every forward pass casts every float32 weight it uses to bfloat16
again. A training step's forward uses each weight once, so nothing is lost there; a
generation inside the step (GRPO and RAFT sample in their training step) runs one forward
pass per token, and re-cast every trained weight for each of them. Sampling 8 completions of
64 tokens at SmolLM2-135M's shape, fully fine-tuned, under bf16 autocast on 2 cores took
6.6 s with the casts repeated against 3.9 s with each weight cast once (medians of 4).

:func:`weights_cast_once` turns autocast's cast cache on for its block, where autocast is
on, and empties the cache at its end: the low-precision copies (half the trained weights'
size in bfloat16) live only while the block runs, not through the rest of the step.
Without autocast it does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def weights_cast_once(device: torch.device) -> Iterator[None]:
    """Autocast's cast cache on for the block (where autocast is on for ``device``), emptied
    at its end."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        yield
        return
    try:
        with torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=True):
            yield
    finally:
        torch.clear_autocast_cache()
