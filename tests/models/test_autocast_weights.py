"""Weights cast once for a block of forward passes under Lightning's cache-less autocast, and
the cast copies freed at the block's end."""

from __future__ import annotations

import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.models.autocast_weights import weights_cast_once


class WeightCasts(TorchDispatchMode):
    """Counts casts of ``weight`` to bfloat16 and keeps weak references to the copies."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.count, self.copies = weight, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and args[0] is self.weight:  # noqa: SLF001
            self.count += 1
            self.copies.append(weakref.ref(out))
        return out


def forwards(layer, x, times=3):
    return [layer(x) for _ in range(times)]


def test_each_weight_is_cast_once_in_the_block_and_the_copy_freed_after():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        with WeightCasts(layer.weight) as casts:
            plain = forwards(layer, x)
        assert casts.count == 3  # Lightning's autocast: a cast per forward pass
        with WeightCasts(layer.weight) as casts:
            with weights_cast_once(x.device):
                assert torch.is_autocast_cache_enabled()
                once = forwards(layer, x)
            assert not torch.is_autocast_cache_enabled()  # the step's own setting is back
        assert casts.count == 1
        assert all(torch.equal(a, b) for a, b in zip(plain, once))
        del once, plain
        gc.collect()
        assert casts.copies and all(ref() is None for ref in casts.copies)  # freed


def test_without_autocast_nothing_changes():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with weights_cast_once(x.device):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(x).dtype == torch.float32
