"""LoKr through peft: each weight change is a Kronecker product of a small matrix and a
low-rank one; the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import DECODER_PROJECTIONS, present_targets, wrap
from workbench.spec.entries import AdapterParams


class LokrAdapterParams(AdapterParams):
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
    rank_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout of the update's rows during training."
    )
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability of skipping a module's update in a step."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(DECODER_PROJECTIONS),
        description="Module names that get adapters.",
    )

    def works_with_fused_head(self) -> bool:
        return "lm_head" not in self.target_modules

    def can_be_disabled(self) -> bool:
        return True


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
