"""Applying the spec's adapter: the entry ``components.ADAPTERS`` holds under its name.

Each adapter is a function ``(model, params) -> model to train`` taking its own settings
model (an ``AdapterParams`` subclass); the runner looks it up by name, and so the adapter's
schedule (which parameters train at each step) and its merge into the base's weights.
"""

from __future__ import annotations

from workbench.spec import components, registry


def apply_adapter(model, adapter_params):
    """Return the model to train under the spec's ``adapter`` section."""
    apply = registry.resolve(components.ADAPTERS[adapter_params.name].apply)
    return apply(model, adapter_params)


def adapter_schedule(model, adapter_params):
    """The adapter's :class:`~workbench.models.adapters.schedule.TrainableSchedule` for the
    model it was applied to, or None when the set of trainable parameters never changes."""
    factory = components.ADAPTERS[adapter_params.name].schedule
    return None if factory is None else registry.resolve(factory)(model, adapter_params)


def merge_adapter(model, adapter_params):
    """The trained ``model`` as a plain model of the base's class where the adapter keeps
    parameters of its own (merged in place); else ``model`` itself."""
    merge = components.ADAPTERS[adapter_params.name].merge
    return model if merge is None else registry.resolve(merge)(model, adapter_params)


def trainable_parameters(model) -> int:
    """Entries that train: every entry of a parameter that trains, or the entries of its
    mask where an adapter trains a fixed subset (sparse, principal weights)."""
    from workbench.models.adapters.masked import trainable_entries

    return sum(trainable_entries(p) for p in model.parameters() if p.requires_grad)
