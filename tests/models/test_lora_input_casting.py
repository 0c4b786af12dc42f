"""LoRA layers that take their input as it comes under autocast
(peft_wrapping.take_inputs_as_they_come): the same loss and gradients as peft's casting
layers, bit for bit, in fewer casts; LoRA with dropout or a variant keeps peft's cast."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.overrides import TorchFunctionMode

from tests.kernels.test_model_families import batch, build
from tests.models.test_frozen_linear import loss_and_grads
from workbench.models.adapters.peft_wrapping import DECODER_PROJECTIONS, take_inputs_as_they_come


def lora_model(dropout: float, **settings):
    # Random B as well as A (not peft's B = 0), so that the adapters' outputs reach the loss
    # and lora_A's gradients are not zero.
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(DECODER_PROJECTIONS),
        init_lora_weights=False, **settings,
    )  # fmt: skip
    return get_peft_model(build("llama"), config)


class TensorCasts(TorchFunctionMode):
    """Counts the ``Tensor.to`` calls made from Python (peft's input casts among them)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.to:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_uncast_lora_layers_give_peft_s_numbers_under_autocast():
    casting = lora_model(0.0)
    uncast = copy.deepcopy(casting)
    # Every projection of the 2 layers.
    assert take_inputs_as_they_come(uncast) == 2 * len(DECODER_PROJECTIONS)
    for autocast in (True, False):
        casting_loss, casting_grads = loss_and_grads(casting, autocast)
        uncast_loss, uncast_grads = loss_and_grads(uncast, autocast)
        assert casting_grads and casting_grads.keys() == uncast_grads.keys()
        assert all(grad.abs().sum() > 0 for grad in casting_grads.values())
        assert torch.equal(casting_loss, uncast_loss), autocast
        for name, grad in casting_grads.items():
            assert torch.equal(uncast_grads[name], grad), (autocast, name)
    # What changed is the casts: peft widens o_proj's and down_proj's bfloat16 input in each
    # layer (and its lora_A narrows it back).
    ids, mask, _ = batch()
    counts = []
    for model in (casting, uncast):
        with TensorCasts() as casts, torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids, attention_mask=mask)
        counts.append(casts.count)
    assert counts[1] <= counts[0] - 2 * 2, counts


@pytest.mark.parametrize(
    "dropout, settings", [(0.1, {}), (0.0, {"use_dora": True})], ids=["dropout", "dora"]
)
def test_lora_with_dropout_or_a_variant_keeps_peft_s_cast(dropout, settings):
    # Dropout on a bfloat16 input would scale it by 1 / (1 - p) rounded to bfloat16.
    model = lora_model(dropout, **settings)
    assert take_inputs_as_they_come(model) == 0
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in model.modules())
