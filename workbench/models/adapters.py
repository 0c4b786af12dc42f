"""Which parameters train: the built-in adapters ``components.ADAPTERS`` names.

Each adapter is a function ``(model, params) -> model to train`` taking its own settings
model (an ``AdapterParams`` subclass); the runner looks it up by name.
"""

from __future__ import annotations

from workbench.spec import components, registry
from workbench.spec.errors import SpecError


def apply_adapter(model, adapter_params):
    """Return the model to train under the spec's ``adapter`` section."""
    apply = registry.resolve(components.ADAPTERS[adapter_params.name].apply)
    return apply(model, adapter_params)


def apply_full(model, params):
    """Every parameter trains."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def apply_lora(model, params):
    """A peft LoRA model on the target modules present in ``model``; the base is frozen."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in params.target_modules if t in present]
    if not targets:
        raise SpecError(
            f"adapter.target_modules {params.target_modules} match no module of this "
            f"model; its linear layers include: {sorted(present)[:20]}"
        )
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
