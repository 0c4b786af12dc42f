"""LIFT-style principal-weight training: only the entries of each target weight that are
largest in its rank-r approximation train.

Paper: "LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction for
Reasoning-Focused Supervised Fine-Tuning" (Liu et al., 2025). With the SVD
``W = U S V^T`` and its rank-r truncation ``W_r = U_r S_r V_r^T``, the mask M holds the
``density`` fraction of entries with the largest ``|W_r|`` (the principal weights), and the
update is ``W <- W - lr * (M * u(W))``. The mask is computed once, when the adapter is
applied (the paper also refreshes it during training; this does not). Everything else is
frozen, and the fine-tuned model saves and exports as a plain model.
"""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.structure import PROJECTIONS
from workbench.spec.entries import AdapterParams


class LiftAdapterParams(AdapterParams):
    """Settings of LIFT-style principal-weight training."""

    rank: int = Field(
        64,
        ge=1,
        description="Rank of the approximation the mask is taken from (capped at each "
        "weight's smaller dimension).",
    )
    density: float = Field(
        0.05, gt=0, le=1, description="Fraction of each target weight's entries that train."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(PROJECTIONS),
        description="Names of the linear layers whose principal weights train.",
    )


def principal_mask(weight, rank: int, density: float):
    """The top-``density`` entries of ``|W_r|``, W's rank-``rank`` SVD truncation."""
    import torch

    from workbench.models.adapters.masked import top_fraction

    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    r = min(rank, s.numel())
    low_rank = (u[:, :r] * s[:r]) @ vh[:r]
    return top_fraction(low_rank.abs(), density)


def apply_lift(model, params):
    """Mask each target weight's gradient to its principal entries; freeze everything else."""
    from workbench.models.adapters.masked import train_masked_entries
    from workbench.models.adapters.structure import target_linears

    masks = {
        linear.weight: principal_mask(linear.weight, params.rank, params.density)
        for _, linear in target_linears(model, params.target_modules, "adapter.target_modules")
    }
    train_masked_entries(model, masks)
    return model
