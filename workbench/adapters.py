"""Which parameters train: the full model, or peft adapters on a frozen base."""

from __future__ import annotations


def apply_adapter(model, adapter_spec):
    """Return the model to train under ``adapter_spec`` (full: unchanged; lora: a PeftModel)."""
    if adapter_spec.name == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if adapter_spec.name == "lora":
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in adapter_spec.target_modules if t in present]
        if not targets:
            from workbench.errors import SpecError

            raise SpecError(
                f"adapter.target_modules {adapter_spec.target_modules} match no module of this "
                f"model; its linear layers include: {sorted(present)[:20]}"
            )
        config = LoraConfig(
            r=adapter_spec.r, lora_alpha=adapter_spec.alpha, lora_dropout=adapter_spec.dropout,
            target_modules=targets, task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)
    raise ValueError(f"unknown adapter {adapter_spec.name!r}")  # the spec validates names first


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
