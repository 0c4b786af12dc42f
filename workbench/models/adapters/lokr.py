"""LoKr through peft: each weight change is a Kronecker product of a small matrix and a
low-rank one; the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import UpdateDropoutParams, present_targets, wrap


class LokrAdapterParams(UpdateDropoutParams):
    """LoKr (peft ``LoKrConfig``): ``dW = (alpha / r) C kron (B A)``, the weight's shape
    factored into a small ``C`` and a rank-r ``B A``."""

    r: int = Field(8, ge=1, le=1024, description="Rank of the larger Kronecker factor.")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (scale = alpha / r).")
    decompose_factor: int = Field(
        -1,
        ge=-1,
        description="Size of the small factor's side (-1: the factor of each dimension "
        "nearest its square root).",
    )


def apply_lokr(model, params: LokrAdapterParams):
    from peft import LoKrConfig

    config = LoKrConfig(
        r=params.r,
        alpha=params.alpha,
        decompose_factor=params.decompose_factor,
        rank_dropout=params.rank_dropout,
        module_dropout=params.module_dropout,
        target_modules=present_targets(model, params.target_modules),
    )
    return wrap(model, config)
