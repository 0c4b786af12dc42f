"""Training a fixed set of entries of some weights: the sparse and the principal-weight
adapters' shared mechanics.

Each chosen weight trains with its gradient multiplied by a 0/1 mask (a hook on the
parameter), so the entries outside the mask get a zero gradient; every other parameter of
the model is frozen. Adam's and SGD's updates of an entry whose gradient was always zero
are zero, so those entries keep the base's values; a decoupled weight decay (AdamW's
``weight_decay``) would still shrink them, which is why the optimizers' default decay is 0.
The mask sits on the parameter (``trainable_mask``), so the trainable-parameter count
(:func:`workbench.models.adapters.applying.trainable_parameters`) counts its entries only.
"""

from __future__ import annotations

MASK_ATTRIBUTE = "trainable_mask"


def train_masked_entries(model, masks: dict) -> None:
    """Only the entries of ``masks`` (parameter -> boolean tensor of its shape) train."""
    from workbench.models.adapters.structure import freeze

    freeze(model)
    for parameter, mask in masks.items():
        parameter.requires_grad_(True)
        parameter.register_hook(_zero_outside(mask))
        setattr(parameter, MASK_ATTRIBUTE, mask)


def _zero_outside(mask):
    """A gradient hook that zeroes the entries outside ``mask``; the mask follows the gradient
    to its device once (the trainer moves the model after the adapter is applied)."""
    placed: dict = {}

    def hook(grad):
        key = (grad.device, grad.dtype)
        if key not in placed:
            placed[key] = mask.to(device=grad.device, dtype=grad.dtype)
        return grad * placed[key]

    return hook


def trainable_entries(parameter) -> int:
    """How many entries of ``parameter`` train (all of them unless a mask says otherwise)."""
    mask = getattr(parameter, MASK_ATTRIBUTE, None)
    return parameter.numel() if mask is None else int(mask.sum())


def top_fraction(scores, density: float):
    """A boolean mask of the ``ceil(density * n)`` largest entries of ``scores``."""
    import math

    import torch

    count = max(1, math.ceil(density * scores.numel()))
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[torch.topk(scores.flatten(), count).indices] = True
    return flat.view_as(scores)
