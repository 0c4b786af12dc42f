"""Applying the spec's adapter: the entry ``components.ADAPTERS`` holds under its name.

Each adapter is a function ``(model, params) -> model to train`` taking its own settings
model (an ``AdapterParams`` subclass); the runner looks it up by name.
"""

from __future__ import annotations

from workbench.spec import components, registry


def apply_adapter(model, adapter_params):
    """Return the model to train under the spec's ``adapter`` section."""
    apply = registry.resolve(components.ADAPTERS[adapter_params.name].apply)
    return apply(model, adapter_params)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
