"""(IA)3 through peft: learned vectors that rescale the keys, values and the MLP's inner
activations; the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import present_targets, wrap
from workbench.spec.entries import AdapterParams


class Ia3AdapterParams(AdapterParams):
    """(IA)3 (peft ``IA3Config``): ``l * (W x)`` on attention targets, ``W (l * x)`` on
    feed-forward ones, each ``l`` a learned vector that starts at ones."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["k_proj", "v_proj", "down_proj"],
        description="Module names whose outputs (or, for feed-forward ones, inputs) are rescaled.",
    )
    feedforward_modules: list[str] = Field(
        default_factory=lambda: ["down_proj"],
        description="Those of the targets rescaled on their input (a subset of the targets).",
    )

    def can_be_disabled(self) -> bool:
        return True


def apply_ia3(model, params: Ia3AdapterParams):
    from peft import IA3Config

    targets = present_targets(model, params.target_modules)
    feedforward = [m for m in params.feedforward_modules if m in targets]
    return wrap(model, IA3Config(target_modules=targets, feedforward_modules=feedforward))
