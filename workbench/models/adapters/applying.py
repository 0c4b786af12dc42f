"""Applying the spec's adapter: the entry ``components.ADAPTERS`` holds under its name.

Each adapter is a function ``(model, params) -> model to train`` taking its own settings
model (an ``AdapterParams`` subclass); the runner looks it up by name, and so the adapter's
schedule (which parameters train at each step) and its merge into the base's weights.
"""

from __future__ import annotations

from workbench.spec import components, registry


def apply_adapter(model, adapter_params, calibration=None):
    """Return the model to train under the spec's ``adapter`` section.

    ``calibration``: batches (``input_ids``, ``attention_mask``) of the run's training rows,
    for an adapter initialised from data (its settings' ``needs_calibration()``); None where
    trained weights are loaded over the adapter next (an export), so only its shape matters.
    """
    apply = registry.resolve(components.ADAPTERS[adapter_params.name].apply)
    if adapter_params.needs_calibration():
        return apply(model, adapter_params, calibration=calibration)
    return apply(model, adapter_params)


def save_trained(model, folder) -> None:
    """Save the trained model (a peft model: its adapter only) to ``folder`` so that it
    applies to the unchanged base: an adapter whose initialisation rewrote the base's weights
    (PiSSA, OLoRA, CorDA) is saved as peft converts it, a plain LoRA adapter."""
    from workbench.models.adapters.lora import INITIAL_ADAPTER

    initial = getattr(model, INITIAL_ADAPTER, None)
    if initial is None:
        model.save_pretrained(folder, safe_serialization=True)
    else:
        model.save_pretrained(
            folder, safe_serialization=True, path_initial_model_for_weight_conversion=initial
        )


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
