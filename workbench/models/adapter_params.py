"""The settings of the built-in adapters (which parameters train): one pydantic model per
choice, each field documented; the spec's ``adapter: {name: lora, r: 8}`` validates against it.
"""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import AdapterParams


class FullAdapterParams(AdapterParams):
    """Every parameter of the base trains (no settings)."""


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
