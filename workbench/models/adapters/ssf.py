"""SSF (Scale and Shift deep Features): a learnable scale and shift of each output channel
of the chosen linear layers; the base is frozen, and after training the two fold into the
layer's weight and bias.

Paper: "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning"
(Lian et al., 2022). For a linear layer ``y = W x + b``: ``y' = gamma * y + beta`` with
gamma, beta per output channel (initialised to 1 and 0, so training starts from the base).
Merged: ``W' = diag(gamma) W`` and ``b' = gamma * b + beta``, the same function with no
extra parameters.

The scale and shift are parameters of the linear layer itself (``ssf_scale``, ``ssf_shift``,
applied by a forward hook), so a checkpoint of the adapted model holds them under the
layer's name and :func:`apply_ssf` followed by ``load_state_dict`` restores it. A merged
layer has a bias; so that the merged model reloads as the base's own class, the siblings of
a merged layer get zero biases and the config's bias flag for that block is set
(``attention_bias``, ``mlp_bias`` of the Llama family).
"""

from __future__ import annotations

from pydantic import Field

from workbench.models.adapters.structure import PROJECTIONS
from workbench.spec.entries import AdapterParams

SCALE, SHIFT, HOOK = "ssf_scale", "ssf_shift", "ssf_hook"

# The config flag that gives every linear layer of a block a bias, by the block's attribute
# name in its decoder layer (transformers' Llama family and the models built like it).
BIAS_FLAGS = {"self_attn": "attention_bias", "mlp": "mlp_bias"}


class SsfAdapterParams(AdapterParams):
    """Settings of SSF."""

    target_modules: list[str] = Field(
        default_factory=lambda: list(PROJECTIONS),
        description="Names of the linear layers whose outputs are scaled and shifted.",
    )

    def works_with_fused_head(self) -> bool:
        return "lm_head" not in self.target_modules


def apply_ssf(model, params):
    """Freeze the base; give each target linear layer a trainable scale and shift."""
    import torch

    from workbench.models.adapters.structure import freeze, target_linears

    targets = target_linears(model, params.target_modules, "adapter.target_modules")
    for name, _ in targets:
        _bias_flag(model, name)  # a model the merge could not save fails before training
    freeze(model)
    for _, linear in targets:
        weight = linear.weight
        channels = weight.shape[0]
        linear.register_parameter(
            SCALE,
            torch.nn.Parameter(torch.ones(channels, dtype=weight.dtype, device=weight.device)),
        )
        linear.register_parameter(
            SHIFT,
            torch.nn.Parameter(torch.zeros(channels, dtype=weight.dtype, device=weight.device)),
        )
        setattr(linear, HOOK, linear.register_forward_hook(_scale_and_shift))
    return model


def _scale_and_shift(linear, inputs, output):
    return output * getattr(linear, SCALE) + getattr(linear, SHIFT)


def merge_ssf(model, params=None):
    """Fold every scale and shift into its layer's weight and bias, in place; returns the
    model, now of the base's class with no SSF parameters (its config's bias flags set)."""
    import torch

    merged = []
    with torch.no_grad():
        for name, linear in list(model.named_modules()):
            if not hasattr(linear, HOOK):
                continue
            scale, shift = getattr(linear, SCALE), getattr(linear, SHIFT)
            getattr(linear, HOOK).remove()
            delattr(linear, HOOK)
            bias = shift.clone() if linear.bias is None else scale * linear.bias + shift
            linear.weight.mul_(scale[:, None])
            linear.bias = torch.nn.Parameter(bias, requires_grad=linear.weight.requires_grad)
            delattr(linear, SCALE)
            delattr(linear, SHIFT)
            merged.append(name)
    for flag, block in {_bias_flag(model, name) for name in merged}:
        _give_biases(model, block)
        setattr(model.config, flag, True)
    return model


def _bias_flag(model, linear_name: str) -> tuple[str, str]:
    """(config flag, block attribute name) that gives ``linear_name`` a bias in a saved
    model; a SpecError when the model's config has none."""
    from workbench.spec.errors import SpecError

    parts = linear_name.split(".")
    block = parts[-2] if len(parts) >= 2 else ""
    flag = BIAS_FLAGS.get(block)
    if flag is None or not hasattr(model.config, flag):
        raise SpecError(
            f"adapter.target_modules: '{linear_name}' cannot carry SSF's merged shift as a "
            f"bias in a saved {type(model.config).__name__} (a model whose config has "
            f"{' or '.join(sorted(set(BIAS_FLAGS.values())))} and blocks named "
            f"{', '.join(sorted(BIAS_FLAGS))} can); choose layers inside those blocks"
        )
    return flag, block


def _give_biases(model, block: str) -> None:
    """A zero bias on every bias-free linear layer of every ``block`` module (the config flag
    gives them all one when the model is loaded again)."""
    import torch

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != block:
            continue
        for linear in module.modules():
            if isinstance(linear, torch.nn.Linear) and linear.bias is None:
                linear.bias = torch.nn.Parameter(
                    torch.zeros(
                        linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device
                    ),
                    requires_grad=False,
                )
