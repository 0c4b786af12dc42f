"""Few-row float32 products of the linear layers computed weight first during a block: the
values of ``F.linear`` (to float32 rounding), every other call left to ``F.linear``, and each
layer's own forward back after the block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch.overrides import TorchFunctionMode

from tests.kernels.test_model_families import build
from workbench.models.few_row_products import MAX_ROWS, few_row_products


class LinearCalls(TorchFunctionMode):
    """Counts calls of ``F.linear`` and of the weight-first products (``torch.mm``,
    ``torch.addmm``) made in the block."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = self.matmul = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear:
            self.linear += 1
        elif func in (torch.mm, torch.addmm):
            self.matmul += 1
        return func(*args, **(kwargs or {}))


def float64_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if layer.bias is None else layer.bias.double()
    return F.linear(x.double(), layer.weight.double(), bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(8, 1, 576), (2, 3, 576), (576,)])
def test_few_rows_are_computed_weight_first_with_linear_values(bias, shape):
    torch.manual_seed(0)
    layer = torch.nn.Linear(576, 1536, bias=bias)
    x = torch.randn(shape)
    plain = layer(x)
    with few_row_products(layer) as count, LinearCalls() as calls:
        ours = layer(x)
    assert count == 1
    assert (calls.linear, calls.matmul) == (0, 1)
    assert ours.shape == plain.shape and ours.is_contiguous()
    reference = float64_linear(layer, x)
    assert torch.allclose(ours.double(), reference, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-5)


def test_many_rows_other_precisions_and_autocast_keep_linear():
    layer = torch.nn.Linear(64, 32)
    cases = [
        (torch.randn(MAX_ROWS + 1, 64), None),  # prefill- and training-sized
        (torch.randn(4, 64, dtype=torch.float64), torch.float64),
        (torch.randn(4, 64), "autocast"),
    ]
    with few_row_products(layer):
        for x, kind in cases:
            if kind == torch.float64:
                layer.double()
            with (
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "autocast"),
                LinearCalls() as calls,
            ):
                out = layer(x)
            layer.float()
            assert (calls.linear, calls.matmul) == (1, 0), kind
            assert out.shape == (x.shape[0], 32)
        with LinearCalls() as calls:
            layer(torch.randn(MAX_ROWS, 64))  # the largest count still taken
        assert (calls.linear, calls.matmul) == (0, 1)


def test_each_layer_gets_its_own_forward_back_also_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(RuntimeError, match="stop"), few_row_products(model) as count:
        assert count == 2
        assert all("forward" in vars(m) for m in model if isinstance(m, torch.nn.Linear))
        raise RuntimeError("stop")
    assert not any("forward" in vars(m) for m in model)
    with LinearCalls() as calls:
        model(torch.randn(2, 8))
    assert calls.linear == 2


def test_lora_layers_keep_their_forward_and_their_plain_parts_go_weight_first():
    torch.manual_seed(0)
    model = build("llama")
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        plain = lora(input_ids=ids).logits
        with few_row_products(lora), LinearCalls() as calls:
            ours = lora(input_ids=ids).logits
    assert calls.linear == 0 and calls.matmul > 0
    assert torch.allclose(ours, plain, rtol=1e-4, atol=1e-5)
    # peft's LoRA layer is no plain linear: its own forward runs, over its plain parts
    adapted = lora.base_model.model.model.layers[0].self_attn.q_proj
    assert "forward" not in vars(adapted)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_greedy_generation_is_unchanged(family):
    model = build(family).eval()
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    settings = dict(
        attention_mask=(ids != 0).long(),
        do_sample=False,
        max_new_tokens=6,
        min_new_tokens=6,
        pad_token_id=0,
        output_scores=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        plain = model.generate(input_ids=ids, **settings)
        with few_row_products(model), LinearCalls() as calls:
            ours = model.generate(input_ids=ids, **settings)
    assert calls.linear == 0
    assert torch.equal(ours.sequences, plain.sequences)
    assert torch.allclose(torch.stack(ours.scores), torch.stack(plain.scores), atol=1e-4)
