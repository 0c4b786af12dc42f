"""Sparse fine-tuning: a fixed set of entries of each target weight trains, chosen once
before training (at random or the largest in magnitude); everything else is frozen.

The update is ``W <- W - lr * (M * u(W))`` with M a fixed 0/1 mask holding a ``density``
fraction of W's entries. Random masks follow "Training Neural Networks with Fixed Sparse
Masks" (Sung et al., 2021) without its Fisher scoring; magnitude masks keep the largest
``|W|``. Only the masked entries move, so the fine-tuned model is the base with a sparse
difference, and saves and exports as a plain model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.models.adapters.structure import PROJECTIONS
from workbench.spec.entries import AdapterParams


class SparseAdapterParams(AdapterParams):
    """Settings of sparse fine-tuning."""

    density: float = Field(
        0.01, gt=0, le=1, description="Fraction of each target weight's entries that train."
    )
    select: Literal["random", "magnitude"] = Field(
        "random",
        description="How the entries are chosen: at random (seeded), or the largest |W|.",
    )
    seed: int = Field(0, ge=0, description="Seed of the random choice.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(PROJECTIONS),
        description="Names of the linear layers whose weights train sparsely.",
    )


def apply_sparse(model, params):
    """Mask each target weight's gradient to its chosen entries; freeze everything else."""
    import torch

    from workbench.models.adapters.masked import top_fraction, train_masked_entries
    from workbench.models.adapters.structure import target_linears

    generator = torch.Generator().manual_seed(params.seed)
    masks = {}
    for _, linear in target_linears(model, params.target_modules, "adapter.target_modules"):
        weight = linear.weight
        if params.select == "magnitude":
            scores = weight.detach().abs().float()
        else:
            scores = torch.rand(weight.shape, generator=generator).to(weight.device)
        masks[weight] = top_fraction(scores, params.density)
    train_masked_entries(model, masks)
    return model
