"""Where a causal language model's parts are, for the adapters that pick parameters by their
place: its decoder layers, its linear layers by name, and its parameters grouped by the module
that owns them.

Found from the module tree rather than from a table of model families, so any transformers
decoder (and a peft model wrapping one) works: the decoder layers are the largest
``ModuleList`` of blocks of one class.
"""

from __future__ import annotations

from workbench.spec.errors import ModelError, SpecError

# The attention and MLP projections of a Llama-style decoder layer: what the masked and the
# scale-and-shift adapters act on by default (LoRA's default targets too).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def decoder_layers(model) -> list[tuple[str, object]]:
    """``(qualified name, layer)`` of each decoder layer of ``model``, in order."""
    import torch

    best, best_size = None, -1
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = (name, module), size
    if best is None:
        raise ModelError(
            f"{type(model).__name__} has no list of decoder layers (a ModuleList of blocks "
            "of one class), which this adapter chooses parameters by"
        )
    prefix, layers = best
    return [(f"{prefix}.{i}", layer) for i, layer in enumerate(layers)]


def target_linears(model, target_modules, field: str) -> list[tuple[str, object]]:
    """``(qualified name, module)`` of each ``torch.nn.Linear`` whose own name is one of
    ``target_modules``; a SpecError naming ``field`` when there is none."""
    import torch

    wanted = set(target_modules)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in wanted
    ]
    if not found:
        present = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear)
            }
        )
        raise SpecError(
            f"{field} = {list(target_modules)} matches no linear layer of this model; its "
            f"linear layers are named: {', '.join(present)}"
        )
    return found


def parameter_groups(model) -> dict[str, list]:
    """Every trainable-able parameter of ``model`` grouped by the qualified name of the module
    that owns it (a tied head and embedding are one parameter, listed once)."""
    groups: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(owner, []).append(parameter)
    return groups


def freeze(model) -> None:
    """Nothing of ``model`` trains (an adapter then turns on what it trains)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
