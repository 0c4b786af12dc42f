"""LISA (Layerwise Importance Sampled AdamW): the embeddings and the head always train; of the
decoder layers, a random few train for a period of K steps, then a new few are drawn.

Paper: "LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model
Fine-Tuning" (Pan et al., 2024). The paper found the embeddings and the head carry most of
the weight change under full fine-tuning, and that sampling the middle layers keeps AdamW's
memory near LoRA's. For period p = floor(t / every), ``S_p`` is ``layers`` decoder layers
drawn uniformly without replacement (seeded by ``seed`` and p), and
``theta_l <- theta_l - lr * u_l(t)`` for every l in ``S_p`` and for everything outside the
decoder layers (embeddings, final norm, head); the other layers are frozen for the period.
"""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import AdapterParams

# The group of everything outside the decoder layers (embeddings, final norm, head).
ALWAYS = "outside the decoder layers"


class LisaAdapterParams(AdapterParams):
    """Settings of LISA."""

    layers: int = Field(
        2, ge=1, description="Decoder layers that train in each period (the paper's gamma)."
    )
    every: int = Field(
        20, ge=1, description="Optimizer steps per period (the paper's K); then new layers."
    )
    seed: int = Field(0, ge=0, description="Seed of the layers' draw (with the period's index).")


def apply_lisa(model, params):
    """Period 0's layers and everything outside the decoder layers train."""
    lisa_schedule(model, params).apply(0)
    return model


def lisa_schedule(model, params):
    """The :class:`~workbench.models.adapters.schedule.TrainableSchedule` of LISA's periods."""
    from workbench.models.adapters.schedule import TrainableSchedule, period_rng
    from workbench.models.adapters.structure import decoder_layers
    from workbench.spec.errors import SpecError

    layers = decoder_layers(model)
    if params.layers > len(layers):
        raise SpecError(
            f"adapter.layers = {params.layers}: this model has {len(layers)} decoder layers; "
            f"choose 1 to {len(layers)}"
        )
    in_layers: set[int] = set()
    groups: dict[str, list] = {}
    for name, layer in layers:
        groups[name] = list(layer.parameters())
        in_layers.update(id(p) for p in groups[name])
    groups[ALWAYS] = [p for p in model.parameters() if id(p) not in in_layers]
    names = [name for name, _ in layers]

    def choose(period: int) -> set[str]:
        return {ALWAYS, *period_rng(params.seed, period).sample(names, params.layers)}

    return TrainableSchedule(groups, choose, params.every)
