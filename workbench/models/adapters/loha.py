"""LoHa through peft: each weight change is the Hadamard product of two low-rank products;
the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import UpdateDropoutParams, present_targets, wrap


class LohaAdapterParams(UpdateDropoutParams):
    """LoHa (peft ``LoHaConfig``): ``dW = (alpha / r) (B1 A1) * (B2 A2)``, of rank up to r^2
    for 2 r (m + n) parameters."""

    r: int = Field(8, ge=1, le=1024, description="Rank of each of the two factors.")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (scale = alpha / r).")


def apply_loha(model, params: LohaAdapterParams):
    from peft import LoHaConfig

    config = LoHaConfig(
        r=params.r,
        alpha=params.alpha,
        rank_dropout=params.rank_dropout,
        module_dropout=params.module_dropout,
        target_modules=present_targets(model, params.target_modules),
    )
    return wrap(model, config)
