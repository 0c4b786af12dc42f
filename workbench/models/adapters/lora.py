"""LoRA through peft: low-rank adapters on the named projections; the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import AdapterParams
from workbench.spec.errors import SpecError


class LoraAdapterParams(AdapterParams):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        description="Module names that get adapters.",
    )

    def works_with_fused_head(self) -> bool:
        return "lm_head" not in self.target_modules

    def can_be_disabled(self) -> bool:
        return True


def apply_lora(model, params):
    """A peft LoRA model on the target modules present in ``model``; the base is frozen."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in params.target_modules if t in present]
    if not targets:
        raise SpecError(
            f"adapter.target_modules {params.target_modules} match no module of this "
            f"model; its linear layers include: {sorted(present)[:20]}"
        )
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
