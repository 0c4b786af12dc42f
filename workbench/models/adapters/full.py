"""Full fine-tuning: every parameter of the base trains."""

from __future__ import annotations

from workbench.spec.entries import AdapterParams


class FullAdapterParams(AdapterParams):
    """Every parameter of the base trains (no settings)."""


def apply_full(model, params):
    """Every parameter trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model
