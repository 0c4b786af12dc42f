"""HFT (Half Fine-Tuning): half of the parameters train in each stage, the other half is
frozen, and each stage draws a new half.

Paper: "HFT: Half Fine-Tuning for Large Language Models" (Hui et al., 2024). The frozen half
keeps what the base knew; switching halves between stages lets every parameter move over a
run. Update at step t of stage s = floor(t / stage_steps):
``theta_g <- theta_g - lr * u_g(t)`` for each group g in H_s, and ``theta_g`` unchanged
outside it, where H_s holds half of the parameter groups (a group: the parameters of one
module, such as a projection or a norm).

Like the paper, the half is drawn within each part of the model, so every part keeps half of
its matrices: within each attention block, each MLP block, each layer's norms and the
parameters outside the layers (embeddings, final norm, head), ``floor(n/2)`` or ``ceil(n/2)``
of its n groups (the rounding alternates between parts and stages, so odd parts even out).
The draw is seeded by ``seed`` and the stage's index.
"""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import AdapterParams


class HftAdapterParams(AdapterParams):
    """Settings of Half Fine-Tuning."""

    stage_steps: int = Field(
        50, ge=1, description="Optimizer steps per stage; each stage trains a new half."
    )
    seed: int = Field(0, ge=0, description="Seed of the halves' draw (with the stage's index).")


def apply_hft(model, params):
    """Stage 0's half trains; the rest of the base is frozen (the schedule switches halves)."""
    hft_schedule(model, params).apply(0)
    return model


def hft_schedule(model, params):
    """The :class:`~workbench.models.adapters.schedule.TrainableSchedule` of HFT's stages."""
    from workbench.models.adapters.schedule import TrainableSchedule, period_rng
    from workbench.models.adapters.structure import parameter_groups

    groups = parameter_groups(model)
    parts: dict[str, list[str]] = {}
    for name in groups:
        # A group's part is the module above it: `...layers.0.self_attn` for q_proj.
        parts.setdefault(name.rsplit(".", 1)[0] if "." in name else "", []).append(name)
    ordered = [sorted(names) for _, names in sorted(parts.items())]

    def choose(stage: int) -> set[str]:
        rng = period_rng(params.seed, stage)
        chosen: set[str] = set()
        for index, names in enumerate(ordered):
            count = len(names) // 2 + (len(names) % 2) * ((index + stage) % 2)
            chosen.update(rng.sample(names, count))
        return chosen

    return TrainableSchedule(groups, choose, params.stage_steps)
