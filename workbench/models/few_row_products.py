"""Linear layers over a few rows in float32 on a CPU: the weight on the left of the product.

Decoding computes each linear layer for a handful of rows (one token per completion), so the
time goes into reading the weights, not into arithmetic. On the 2-core CPUs of BENCHMARKS.md,
torch's ``F.linear`` (``x @ W^T``) streams the weights at about 9 GB/s in float32 for 8 rows,
while the same product written ``(W @ x^T)^T`` streams them at about 13 GB/s: the BLAS takes
another kernel for it. Over the 211 products of one decoding step at SmolLM2-135M's shape
(30 layers and the tied 49,152-entry head, 8 rows, weights not in cache) that was 59 ms
against 42 ms; at 2 and 4 rows 75 against 19 ms and 63 against 24 ms. At 128 rows the
weight-first product was still as fast or faster on every shape of that model; at 256 and
1,024 rows (prefill, training) the two are level, and ``F.linear`` stays. In bfloat16
``F.linear`` is the faster of the two (27 against 29 ms), so only float32 changes.

:func:`few_row_products` makes the plain linear layers of a model compute float32 inputs
of at most :data:`MAX_ROWS` rows the weight-first way for the length of a block (a
generation), outside autocast; every other call goes on as before. The two ways differ only
by the order of float32 rounding.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn

from workbench.models.frozen_linear import RecastLinear

# The most rows (tokens over the batch) computed weight first: the largest count at which
# it was measured no slower on every linear shape of SmolLM2-135M (see the module text).
MAX_ROWS = 128
# Layers whose forward is F.linear outside autocast (RecastLinear's differs only under it).
_PLAIN_LINEARS = (nn.Linear, RecastLinear)


def weight_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x^T)^T + bias``, contiguous."""
    rows = x.reshape(-1, x.shape[-1])
    if bias is None:
        out = torch.mm(weight, rows.T)
    else:
        out = torch.addmm(bias.unsqueeze(1), weight, rows.T)
    return out.T.contiguous().reshape(*x.shape[:-1], weight.shape[0])


def takes_weight_first(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a linear layer's product over ``x`` is one :func:`weight_first` speeds up:
    float32 on a CPU, outside autocast, at most :data:`MAX_ROWS` rows."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 1
        and x.numel() <= MAX_ROWS * x.shape[-1]
        and not torch.is_autocast_enabled("cpu")
    )


def _forward(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if takes_weight_first(x, module.weight):
        return weight_first(x, module.weight, module.bias)
    return type(module).forward(module, x)


@contextlib.contextmanager
def few_row_products(model: nn.Module) -> Iterator[int]:
    """Within the block, the plain linear layers of ``model`` (``nn.Linear`` and
    :class:`~workbench.models.frozen_linear.RecastLinear`, not quantised or adapter
    subclasses) compute few-row float32 CPU products weight first; yields how many layers.
    Each layer's own forward is back at the end, also after an error."""
    layers = [m for m in model.modules() if type(m) in _PLAIN_LINEARS and "forward" not in vars(m)]
    try:
        for layer in layers:
            layer.forward = types.MethodType(_forward, layer)
        yield len(layers)
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
