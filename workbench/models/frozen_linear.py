"""Frozen linear layers that keep no low-precision copy of their weight for the backward pass.

Under autocast (``train.precision: bf16-mixed``) a linear layer's product runs in bfloat16:
autocast casts the float32 weight to bfloat16 at every forward, and autograd keeps that copy
until the backward pass, which needs it for the gradient of the layer's input. A weight
that trains is cast once per autocast region and the copy is shared; a frozen one (the base
model under LoRA and the other adapters) is cast afresh at every call, and each copy lives
until the backward pass reaches its layer. At SmolLM2-135M's shape that is 212 MB of
bfloat16 weights held through every step, on top of the float32 weights themselves.

:func:`recast_frozen_weights` turns every frozen ``nn.Linear`` of a model into a
:class:`RecastLinear`: under autocast it computes the same product from the same bfloat16
values, keeps a reference to the float32 weight it already holds instead of the copy, and
casts the weight again in the backward pass (one more read of the frozen weights a step).
Outside autocast, or where the weight trains, it is the plain layer. Outputs and gradients
are those of the plain layer under autocast, bit for bit (tested).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _CastOnceMoreLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` in ``dtype``, saving ``weight`` as it is (float32) rather than
    its low-precision copy; the gradient of ``x`` only (weight and bias are frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
        ctx.save_for_backward(weight)
        ctx.dtype, ctx.input_dtype = dtype, x.dtype
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (weight,) = ctx.saved_tensors
        with torch.autocast(grad_output.device.type, enabled=False):
            grad_input = grad_output.to(ctx.dtype).matmul(weight.to(ctx.dtype))
        return grad_input.to(ctx.input_dtype), None, None, None


class RecastLinear(nn.Linear):
    """An ``nn.Linear`` that, under autocast with a frozen weight and bias, casts its weight
    again in the backward pass instead of keeping the forward's copy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        frozen = not self.weight.requires_grad and (
            self.bias is None or not self.bias.requires_grad
        )
        saves_for_backward = x.requires_grad and torch.is_grad_enabled()
        if not (frozen and saves_for_backward and torch.is_autocast_enabled(device)):
            return super().forward(x)
        return _CastOnceMoreLinear.apply(
            x, self.weight, self.bias, torch.get_autocast_dtype(device)
        )


def recast_frozen_weights(model: nn.Module) -> int:
    """Make every plain ``nn.Linear`` of ``model`` whose weight is frozen a
    :class:`RecastLinear` (in place; its parameters and state dict unchanged); returns how
    many. A layer whose weight trains is left as it is."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear and not module.weight.requires_grad:
            module.__class__ = RecastLinear
            count += 1
    return count
