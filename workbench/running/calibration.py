"""The few training rows an adapter initialised from data reads (EVA, CorDA): the first rows
of the run's encoded training set, batched by the row kind's own collate.

Only ``input_ids`` and ``attention_mask`` are kept: what a forward pass of the base needs,
whatever the row kind (supervised rows, preference pairs, prompts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Enough tokens for the layers' input statistics on the built-in tasks, a few forward passes
# of the base: EVA and CorDA read each target module's inputs on these.
CALIBRATION_ROWS = 32
CALIBRATION_BATCH = 8


def calibration_batches(encoded: Sequence, collate: Callable, pad_id: int) -> list[dict]:
    """Batches of the first :data:`CALIBRATION_ROWS` of ``encoded`` (the row kind's encoded
    rows, collated by its ``collate``), each with ``input_ids`` and ``attention_mask``."""
    rows = list(encoded[:CALIBRATION_ROWS])
    batches = []
    for start in range(0, len(rows), CALIBRATION_BATCH):
        batch = collate(rows[start : start + CALIBRATION_BATCH], pad_id)
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
    return batches
