"""VeRA through peft: one pair of frozen random matrices shared by every layer, and per
layer two trained scaling vectors; the base is frozen."""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.peft_wrapping import ProjectionAdapterParams, present_targets, wrap


class VeraAdapterParams(ProjectionAdapterParams):
    """VeRA (peft ``VeraConfig``): ``dW = diag(b) B diag(d) A`` with ``A``, ``B`` frozen,
    random and shared; only the vectors ``b`` (out features, starts at 0) and ``d`` (r)
    train."""

    r: int = Field(256, ge=1, le=8192, description="Rank of the shared random matrices.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    d_initial: float = Field(
        0.1, gt=0, le=10, description="Starting value of every entry of the vectors d."
    )
    projection_prng_key: int = Field(
        0, ge=0, description="Seed of the shared random matrices (saved with the adapter)."
    )


def apply_vera(model, params: VeraAdapterParams):
    from peft import VeraConfig

    config = VeraConfig(
        r=params.r,
        vera_dropout=params.dropout,
        d_initial=params.d_initial,
        projection_prng_key=params.projection_prng_key,
        target_modules=present_targets(model, params.target_modules),
    )
    return wrap(model, config)
