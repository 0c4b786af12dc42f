"""Grouped-query attention without copied key/value heads (workbench.models.grouped_attention):
the same losses and gradients as the copied heads, in float64, on padded and packed rows;
fewer saved activations; torch given the shared heads; the variable set for a run only, on
a CPU, and never over the user's setting; generation in bfloat16 given copied heads."""

from __future__ import annotations

import copy
import os

import pytest
import torch

import workbench
from tests.conftest import fast_spec
from tests.kernels.test_model_families import build
from workbench.models.grouped_attention import (
    FORCE_GQA_ENV,
    generation_heads,
    shared_key_value_heads,
)
from workbench.running.events import RunObserver


def padded_and_packed_batches():
    """Two rows of 7 and 4 tokens, right-padded (with a mask), and packed into one sequence
    (position ids restarting: transformers builds a block-diagonal mask)."""
    torch.manual_seed(1)
    a, b = torch.randint(3, 300, (7,)), torch.randint(3, 300, (4,))
    padded_ids = torch.zeros(2, 7, dtype=torch.long)
    padded_ids[0], padded_ids[1, :4] = a, b
    mask = torch.zeros(2, 7, dtype=torch.long)
    mask[0], mask[1, :4] = 1, 1
    labels = padded_ids.masked_fill(mask == 0, -100)
    padded = {"input_ids": padded_ids, "attention_mask": mask, "labels": labels}
    packed_ids = torch.cat([a, b])[None]
    positions = torch.cat([torch.arange(7), torch.arange(4)])[None]
    packed_labels = packed_ids.clone()
    packed_labels[0, 7] = -100  # no prediction across the row boundary
    # No cache: with one, transformers would not read the rows off the position ids.
    packed = {"input_ids": packed_ids, "position_ids": positions, "labels": packed_labels,
              "use_cache": False}  # fmt: skip
    return {"padded": padded, "packed": packed}


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_shared_heads_give_the_copied_heads_loss_and_gradients(layout, monkeypatch):
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    model = build("llama").double()  # 4 query heads, 2 key/value heads
    batch = padded_and_packed_batches()[layout]
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        calls.append((query.shape[1], key.shape[1], kwargs.get("enable_gqa", False)))
        return sdpa(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    copied_loss, copied_grads = loss_and_grads(model, batch)
    assert calls and all(c == (4, 4, False) for c in calls)  # heads copied under a mask
    calls.clear()
    with shared_key_value_heads(on_cpu=True) as shared:
        assert shared
        shared_loss, shared_grads = loss_and_grads(copy.deepcopy(model), batch)
    assert calls and all(c == (4, 2, True) for c in calls)  # torch gets the shared heads
    torch.testing.assert_close(shared_loss, copied_loss, rtol=1e-12, atol=1e-12)
    for name, grad in copied_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-10, atol=1e-12)


def saved_activation_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for the backward pass, each storage once, the
    model's own weights left out."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def keep(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(**batch).loss.backward()
    return sum(seen.values())


def test_shared_heads_keep_fewer_activations(monkeypatch):
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    model = build("llama")  # 4 query heads sharing 2 key/value heads, head_dim 8, 2 layers
    torch.manual_seed(2)
    ids = torch.randint(3, 300, (2, 48))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0  # a padded row: transformers passes a mask (without one it shares already)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100),
             "use_cache": False}  # fmt: skip
    copied = saved_activation_bytes(model, batch)
    with shared_key_value_heads(on_cpu=True):
        shared = saved_activation_bytes(model, batch)
    # Copied, each layer keeps keys and values of 4 heads (2 x 4 x 2 rows x 48 x 8 float32
    # values); shared, of 2 heads: half of them are no longer kept.
    layers, one_head = 2, 2 * 48 * 8 * 4
    assert copied - shared >= layers * 2 * 2 * one_head * 0.9


def test_the_variable_is_set_on_a_cpu_only_and_never_over_the_users(monkeypatch):
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    environ = {}
    with shared_key_value_heads(on_cpu=False, environ=environ) as shared:
        assert not shared and environ == {}
    with shared_key_value_heads(on_cpu=True, environ=environ) as shared:
        assert shared and environ == {FORCE_GQA_ENV: "1"}
    assert environ == {}
    for users in ("0", "1"):
        environ = {FORCE_GQA_ENV: users}
        with shared_key_value_heads(on_cpu=True, environ=environ) as shared:
            assert shared == (users == "1") and environ == {FORCE_GQA_ENV: users}
        assert environ == {FORCE_GQA_ENV: users}


class SeesTheVariable(RunObserver):
    def __init__(self):
        self.values = []

    def on_step(self, step, metrics):
        self.values.append(os.environ.get(FORCE_GQA_ENV))


def test_a_run_on_a_cpu_shares_the_heads_while_it_trains_and_not_after(store_uri, monkeypatch):
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = SeesTheVariable()
    workbench.run(fast_spec(train={"steps": 2, "eval_every": 2}), log=lambda *a: None,
                  observers=[seen])  # fmt: skip
    assert seen.values == ["1", "1"]
    assert FORCE_GQA_ENV not in os.environ


def decoding_calls(model, monkeypatch, autocast: bool):
    """(query heads, key/value heads, enable_gqa) of each decoding step's attention call (a
    query shorter than its keys) while ``sample_completions`` samples under a run's shared
    heads, in float32 or bf16 autocast."""
    from workbench.methods.rl.sampling import sample_completions

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        if query.shape[2] < key.shape[2]:
            calls.append((query.shape[1], key.shape[1], kwargs.get("enable_gqa", False)))
        return sdpa(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    prompts = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    with shared_key_value_heads(on_cpu=True), torch.autocast("cpu", enabled=autocast):
        sample_completions(model, prompts, group_size=2, max_new_tokens=3, temperature=1.0,
                           top_p=1.0, top_k=0, eos_id=None, pad_id=0, seed=0)  # fmt: skip
        assert os.environ[FORCE_GQA_ENV] == "1"  # the run's setting is back after sampling
    return calls


def test_generation_in_bf16_copies_the_heads_and_float32_shares_them(monkeypatch):
    """Decoding one token at a time, torch's CPU flash attention over shared heads is several
    times slower in bfloat16: generation under bf16 runs transformers' own grouped path (the
    4 query heads folded into 2 x 2 positions over the 2 shared heads, nothing copied),
    float32 gives torch the shared heads."""
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    model = build("llama")  # 4 query heads, 2 key/value heads
    in_float32 = decoding_calls(model, monkeypatch, autocast=False)
    assert in_float32 and all(c == (4, 2, True) for c in in_float32)
    in_bf16 = decoding_calls(model, monkeypatch, autocast=True)
    assert in_bf16 and all(c == (2, 2, False) for c in in_bf16)


def test_generation_leaves_the_users_variable_alone(monkeypatch):
    model = build("llama").to(torch.bfloat16)  # computes in bfloat16 without autocast
    environ = {FORCE_GQA_ENV: "1"}  # set by the user, not by a run
    with generation_heads(model, environ=environ) as shared:
        assert shared and environ == {FORCE_GQA_ENV: "1"}
    monkeypatch.delenv(FORCE_GQA_ENV, raising=False)
    with shared_key_value_heads(on_cpu=True):
        with generation_heads(model) as shared:
            assert not shared and FORCE_GQA_ENV not in os.environ
        assert os.environ[FORCE_GQA_ENV] == "1"
