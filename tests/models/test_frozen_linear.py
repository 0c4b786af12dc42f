"""Frozen linear layers under autocast (workbench.models.frozen_linear): the same outputs and
gradients as the plain layers, bit for bit, on a LoRA model of the Llama family; no bfloat16
copy of a frozen weight kept for the backward pass; the plain layer outside autocast and
where the weight trains."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from tests.kernels.test_model_families import batch, build
from workbench.models.frozen_linear import RecastLinear, recast_frozen_weights


def lora_model():
    model = build("llama")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    return get_peft_model(model, config)


def loss_and_grads(model, autocast: bool):
    ids, mask, targets = batch()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=mask).logits
    loss = nn.functional.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def test_recast_layers_give_the_plain_layers_numbers_under_autocast_and_without():
    plain = lora_model()
    recast = copy.deepcopy(plain)
    changed = recast_frozen_weights(recast)
    # Every frozen linear of the 2 layers (7 each) and the head; the adapters' own layers train.
    assert changed == 2 * 7 + 1
    assert all(
        isinstance(m, RecastLinear) == (not m.weight.requires_grad)
        for m in recast.modules()
        if isinstance(m, nn.Linear)
    )
    for autocast in (True, False):
        plain_loss, plain_grads = loss_and_grads(plain, autocast)
        recast_loss, recast_grads = loss_and_grads(recast, autocast)
        assert plain_grads and plain_grads.keys() == recast_grads.keys()
        assert torch.equal(plain_loss, recast_loss), autocast
        for name, grad in plain_grads.items():
            assert torch.equal(recast_grads[name], grad), (autocast, name)


def kept_weight_copies(model) -> int:
    """How many bfloat16 copies of a frozen linear weight autograd keeps for the backward pass
    of one forward under bf16 autocast."""
    frozen = [m.weight for m in model.modules()
              if isinstance(m, nn.Linear) and not m.weight.requires_grad]  # fmt: skip
    copies = set()

    def keep(t):
        # The product keeps the copy transposed (the second operand of x @ W.T).
        for index, weight in enumerate(frozen):
            if t.dtype == torch.bfloat16 and t.shape == weight.T.shape:
                copies.update([index] if torch.equal(t, weight.detach().T.bfloat16()) else [])
        return t

    ids, mask, _ = batch()
    with (
        torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        out = model(input_ids=ids, attention_mask=mask).logits
    out.float().sum().backward()
    return len(copies)


def test_no_bfloat16_copy_of_a_frozen_weight_is_kept():
    plain = lora_model()
    recast = copy.deepcopy(plain)
    recast_frozen_weights(recast)
    # Plain, every frozen layer whose input needs a gradient keeps its weight's copy (the
    # first layer's projections of the embeddings need none).
    assert kept_weight_copies(plain) >= 2 * 7 + 1 - 5
    assert kept_weight_copies(recast) == 0


def test_a_layer_that_trains_or_runs_without_grad_is_the_plain_layer():
    layer = nn.Linear(8, 4)
    assert recast_frozen_weights(layer) == 0 and type(layer) is nn.Linear  # its weight trains
    layer.requires_grad_(False)
    assert recast_frozen_weights(layer) == 1 and type(layer) is RecastLinear
    x = torch.randn(3, 8, requires_grad=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and out.grad_fn is None
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
