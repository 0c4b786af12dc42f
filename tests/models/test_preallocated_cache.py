"""The preallocated key/value cache: the same keys, values and generations as transformers'
DynamicCache, each step written in place, and a fall-back to concatenation where its buffers
no longer fit."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tests.kernels.test_model_families import build
from workbench.models.preallocated_cache import (
    PreallocatedCache,
    PreallocatedLayer,
    preallocated_cache,
)


def prompts():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [0, 3, 4, 5, 6, 7]])
    return ids, (ids != 0).long()


def greedy(model, cache, new_tokens=7):
    ids, mask = prompts()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=cache,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_generation_is_the_same_as_with_the_dynamic_cache_and_writes_in_place(family):
    model = build(family).eval()
    width, new_tokens = prompts()[0].shape[1], 7
    cache = PreallocatedCache(width + new_tokens)
    ours, our_scores = greedy(model, cache, new_tokens)
    theirs, their_scores = greedy(model, DynamicCache(), new_tokens)
    assert torch.equal(ours, theirs) and torch.equal(our_scores, their_scores)
    # Every layer still reads its buffers: no step was concatenated.
    layers = cache.layers
    assert len(layers) == model.config.num_hidden_layers
    for layer in layers:
        assert isinstance(layer, PreallocatedLayer)
        assert layer.in_place
        assert layer.keys.shape[-2] == width + new_tokens - 1  # the last token is not cached


def states(rows, length, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=gen), torch.randn(
        rows, 2, length, 4, generator=gen
    )


def filled(capacity, steps=(5, 1, 1)):
    """A preallocated and a dynamic layer given the same updates."""
    ours, theirs = PreallocatedLayer(capacity), DynamicLayer()
    for seed, length in enumerate(steps):
        k, v = states(2, length, seed)
        ours.update(k, v)
        theirs.update(k, v)
    return ours, theirs


def assert_same(ours, theirs):
    assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    assert ours.get_seq_length() == theirs.get_seq_length()


def test_repeating_the_rows_keeps_the_buffers_and_the_room():
    ours, theirs = filled(capacity=12)
    ours.batch_repeat_interleave(3)
    theirs.batch_repeat_interleave(3)
    assert_same(ours, theirs)
    k, v = states(6, 5, seed=9)  # fills the 12 positions
    ours.update(k, v)
    theirs.update(k, v)
    assert_same(ours, theirs)
    assert ours.in_place and ours.keys.shape == (6, 2, 12, 4)


def test_a_crop_writes_over_the_dropped_positions():
    ours, theirs = filled(capacity=12)
    ours.crop(-2)
    theirs.crop(-2)
    k, v = states(2, 3, seed=7)
    ours.update(k, v)
    theirs.update(k, v)
    assert_same(ours, theirs)
    assert ours.in_place


@pytest.mark.parametrize("change", ["select rows", "overflow", "dtype"])
def test_what_no_longer_fits_goes_on_by_concatenation(change):
    ours, theirs = filled(capacity=8)
    rows = 2
    if change == "select rows":
        for layer in (ours, theirs):
            layer.batch_select_indices(torch.tensor([1]))
        rows = 1
    k, v = states(rows, 4 if change == "overflow" else 1, seed=5)
    if change == "dtype":  # concatenation promotes; a copy into the buffer would not
        k, v = k.double(), v.double()
    ours.update(k, v)
    theirs.update(k, v)
    assert_same(ours, theirs)
    assert ours.keys.dtype == theirs.keys.dtype
    assert not ours.in_place
    k, v = states(rows, 1, seed=6)
    ours.update(k.to(ours.keys.dtype), v.to(ours.keys.dtype))
    theirs.update(k.to(ours.keys.dtype), v.to(ours.keys.dtype))
    assert_same(ours, theirs)


def test_models_with_other_cache_layers_keep_transformers_cache():
    assert isinstance(preallocated_cache(build("llama").config, 10), PreallocatedCache)
    assert preallocated_cache(build("gemma3").config, 10) is None  # sliding-window layers
    assert preallocated_cache(build("mistral", sliding_window=4).config, 10) is None
    with pytest.raises(ValueError, match="at least one position"):
        PreallocatedCache(0)
