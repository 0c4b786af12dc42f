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

Generation is the exception in bfloat16. With one query token (each decoding step), torch's
CPU flash attention over shared heads (``enable_gqa``) in bfloat16 took about 4 times as long
as transformers' own path without the variable, which folds each group of query heads into
positions over the shared key/value heads (``pack_gqa``: nothing copied either): 580 against
140 microseconds a layer at SmolLM2-135M's shape, 8 rows, a 150-token cache. Sampling 8
completions of 64 tokens under bf16 autocast took 5.2 s against 3.7 s. So
:func:`generation_heads` takes the variable away for the length of a generation computed in
bfloat16. In float32 the two paths decode about as fast (6.2 s against 6.5 s), and the
variable stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

FORCE_GQA_ENV = "TRANSFORMERS_SDPA_FORCE_GQA"
# Whether the variable now set is the workbench's (shared_key_value_heads), not the user's.
_set_by_run = False


@contextlib.contextmanager
def shared_key_value_heads(on_cpu: bool, environ=os.environ) -> Iterator[bool]:
    """Within the block, transformers' ``sdpa`` attention gives torch the shared key/value
    heads where ``on_cpu`` (and the user has not set :data:`FORCE_GQA_ENV` either way);
    yields whether it does. The variable is as it was afterwards."""
    global _set_by_run
    if not on_cpu or FORCE_GQA_ENV in environ:
        yield environ.get(FORCE_GQA_ENV) == "1"
        return
    environ[FORCE_GQA_ENV] = "1"
    _set_by_run = True
    try:
        yield True
    finally:
        _set_by_run = False
        environ.pop(FORCE_GQA_ENV, None)


def computes_in_bf16(model) -> bool:
    """Whether ``model``'s forward computes in bfloat16 here: under bf16 autocast on its
    device, or with bfloat16 weights."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return False
    device = parameter.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return True
    return parameter.dtype == torch.bfloat16


@contextlib.contextmanager
def generation_heads(model, environ=os.environ) -> Iterator[bool]:
    """Around a generation: transformers' own grouped attention (one-token queries folded over
    the shared heads) where a run set the variable and ``model`` computes in bfloat16; yields
    whether the variable is on within the block. A variable the user set is left as it is."""
    if not (_set_by_run and environ.get(FORCE_GQA_ENV) == "1" and computes_in_bf16(model)):
        yield environ.get(FORCE_GQA_ENV) == "1"
        return
    environ.pop(FORCE_GQA_ENV)
    try:
        yield False
    finally:
        environ[FORCE_GQA_ENV] = "1"
