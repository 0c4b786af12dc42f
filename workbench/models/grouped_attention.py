"""Grouped-query attention on a CPU without copying the key/value heads.

A model with fewer key/value heads than query heads (SmolLM2-135M: 9 query heads, 3
key/value heads) shares each key/value head among a group of queries. transformers' ``sdpa``
attention (5.x) passes the shared heads to torch's ``scaled_dot_product_attention`` as they
are (``enable_gqa=True``) only where no mask is given; with a mask, which padding and packed
rows (``train.padding_free``) always give, it first copies every key/value head once per
query of its group (``repeat_kv``), and autograd keeps those copies for the backward pass.

On a CPU, torch's flash attention takes a mask and the shared heads together, and gives
the same values and gradients (tested). At SmolLM2-135M's shape, a LoRA SFT step of 1,277
tokens keeps about 116 MiB fewer activations (two thirds of its keys and values, 30 layers),
and the attention runs a little faster. On CUDA, torch's fused kernels take no mask with
shared heads and would fall back to the slow reference path, so nothing changes there.

transformers reads ``TRANSFORMERS_SDPA_FORCE_GQA`` at every attention call: a run sets it
for its own duration, in a process without CUDA, where the user has not set it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

FORCE_GQA_ENV = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def shared_key_value_heads(on_cpu: bool, environ=os.environ) -> Iterator[bool]:
    """Within the block, transformers' ``sdpa`` attention gives torch the shared key/value
    heads where ``on_cpu`` (and the user has not set :data:`FORCE_GQA_ENV` either way);
    yields whether it does. The variable is as it was afterwards."""
    if not on_cpu or FORCE_GQA_ENV in environ:
        yield environ.get(FORCE_GQA_ENV) == "1"
        return
    environ[FORCE_GQA_ENV] = "1"
    try:
        yield True
    finally:
        environ.pop(FORCE_GQA_ENV, None)
