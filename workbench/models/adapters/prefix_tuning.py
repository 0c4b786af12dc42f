"""Prefix tuning through peft: learned keys and values of virtual tokens at every layer's
attention, attended to by every position; the whole model is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import VirtualTokenAdapterParams, wrap


class PrefixTuningAdapterParams(VirtualTokenAdapterParams):
    """Prefix tuning (peft ``PrefixTuningConfig``): each layer attends to ``[P_k; K]`` and
    ``[P_v; V]``, with the prefixes ``P`` the only trained parameters (directly, or through
    an MLP of them when ``prefix_projection``)."""

    prefix_projection: bool = Field(
        False,
        description="Train the prefixes through a two-layer MLP (the paper's reparametrisation).",
    )
    encoder_hidden_size: int = Field(
        128, ge=1, le=65536, description="Hidden width of that MLP (with prefix_projection)."
    )


def apply_prefix_tuning(model, params: PrefixTuningAdapterParams):
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(
        num_virtual_tokens=params.num_virtual_tokens,
        prefix_projection=params.prefix_projection,
        encoder_hidden_size=params.encoder_hidden_size,
    )
    return wrap(model, config)
