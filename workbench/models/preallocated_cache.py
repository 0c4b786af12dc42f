"""A key/value cache that writes each decoding step in place instead of concatenating.

transformers' ``DynamicCache`` grows by ``torch.cat``: every decoding step copies every
layer's whole cache into a new tensor, so a generation of n tokens copies the cache n times.
On a CPU that copying is a large share of a small model's decoding step: sampling 8
completions of 64 tokens at SmolLM2-135M's shape under bf16 autocast spent 0.9 s of 4.9 in
``aten::cat`` (torch profiler, 2 cores), against 2.0 s in the matrix products.

:class:`PreallocatedCache` is a ``DynamicCache`` whose layers hold their keys and values in
buffers sized for the whole generation (the prompt and every new token): a step copies its
one new position into the buffer and the layer's ``keys``/``values`` are views of the filled
part. Everything ``DynamicCache`` does keeps working: a layer whose tensors were replaced
(``crop`` keeps the buffer; selecting or reordering rows, or a step that does not fit, does
not) goes on by concatenation, as a plain ``DynamicLayer`` would. The values are the same
(tested bit for bit against ``DynamicCache``); the buffers take what the finished
``DynamicCache`` would, without its transient second copy at each step.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values live in buffers of ``capacity`` positions."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    @property
    def in_place(self) -> bool:
        """Whether ``keys`` and ``values`` are still views of the buffers (each step written
        in place), not tensors that replaced them (concatenated from here on)."""
        return self._key_buffer is not None and self._holds_views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._key_buffer = self._buffer_for(key_states)
            self._value_buffer = self._buffer_for(value_states)
            self.keys = self._key_buffer[:, :, :0]
            self.values = self._value_buffer[:, :, :0]
        if not self._fits(key_states, value_states):
            self._key_buffer = self._value_buffer = None  # replaced: concatenate from here on
            return super().update(key_states, value_states, *args, **kwargs)
        start, end = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
        self._key_buffer[:, :, start:end].copy_(key_states)
        self._value_buffer[:, :, start:end].copy_(value_states)
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat each row ``repeats`` times, into buffers with the same room."""
        if not self.in_place:
            super().batch_repeat_interleave(repeats)
            return
        length = self.keys.shape[-2]
        keys = self.keys.repeat_interleave(repeats, dim=0)
        values = self.values.repeat_interleave(repeats, dim=0)
        self._key_buffer, self._value_buffer = self._buffer_for(keys), self._buffer_for(values)
        self._key_buffer[:, :, :length].copy_(keys)
        self._value_buffer[:, :, :length].copy_(values)
        self.keys = self._key_buffer[:, :, :length]
        self.values = self._value_buffer[:, :, :length]

    def _buffer_for(self, states: torch.Tensor) -> torch.Tensor:
        batch, heads, _, dim = states.shape
        return states.new_empty((batch, heads, self.capacity, dim))

    def _holds_views(self) -> bool:
        """Whether ``keys``/``values`` are still the filled starts of the buffers."""
        return all(
            # Storage, not data_ptr: a view of no positions has no data pointer of its own.
            view.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
            and view.storage_offset() == 0
            and view.stride() == buffer.stride()
            and view.shape[:2] == buffer.shape[:2]
            for view, buffer in ((self.keys, self._key_buffer), (self.values, self._value_buffer))
        )

    def _fits(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        """Whether the new positions go into the buffers with what concatenation would give:
        the same rows, heads and dtype, and room left."""
        if not self.in_place:
            return False
        return (
            key_states.dtype == self._key_buffer.dtype
            and value_states.dtype == self._value_buffer.dtype
            and key_states.shape[:2] == self._key_buffer.shape[:2]
            and value_states.shape[:2] == self._value_buffer.shape[:2]
            and key_states.shape[-1] == self._key_buffer.shape[-1]
            and value_states.shape[-1] == self._value_buffer.shape[-1]
            and self.keys.shape[-2] + key_states.shape[-2] <= self.capacity
        )


class PreallocatedCache(DynamicCache):
    """A ``DynamicCache`` of :class:`PreallocatedLayer`, each with room for ``capacity``
    positions (the prompt's and every token to generate)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a cache needs room for at least one position, not {capacity}")
        super().__init__()
        self.layer_class_to_replicate = partial(PreallocatedLayer, capacity)


def preallocated_cache(config, capacity: int) -> PreallocatedCache | None:
    """A :class:`PreallocatedCache` for a model of ``config``, or None where transformers
    would give it other layers than plain ``DynamicLayer`` (sliding-window or linear-attention
    layers, as Gemma 3's or Mistral's): those keep transformers' own cache."""
    try:
        layers = DynamicCache(config=config).layers
    except (TypeError, ValueError, AttributeError):
        return None
    if any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return PreallocatedCache(capacity)
