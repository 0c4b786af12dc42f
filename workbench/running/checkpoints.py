"""A run's training checkpoint on disk: one file, or one folder of shards.

Single-process and DDP runs save one file (rank 0 writes the whole state). A sharding
strategy (FSDP) saves a folder: every rank writes its own shards through
``torch.distributed.checkpoint``, and rank 0 adds the loop counters, RNG states and data
position as Lightning's ``meta.pt``. Both are published under the same name
(:data:`LAST_CHECKPOINT`) once complete, and both resume and export from here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

LAST_CHECKPOINT = "last.ckpt"
# What Lightning's FSDPStrategy names the non-tensor part of a sharded checkpoint.
SHARDED_METADATA = "meta.pt"
_PREVIOUS = ".previous"


def publish(partial: Path, folder: Path) -> Path:
    """Make the complete checkpoint ``partial`` the run's ``last.ckpt`` in ``folder``.

    A file replaces the old one atomically. A folder cannot replace a folder in one step:
    the old one is set aside first, so a kill in between still leaves one complete
    checkpoint (:func:`last` finds it).
    """
    target = folder / LAST_CHECKPOINT
    if partial.is_file():
        os.replace(partial, target)
        return target
    previous = folder / (LAST_CHECKPOINT + _PREVIOUS)
    shutil.rmtree(previous, ignore_errors=True)
    if target.is_dir():
        os.replace(target, previous)
    elif target.exists():
        target.unlink()
    os.replace(partial, target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def last(folder: Path) -> Path | None:
    """The run's last complete checkpoint in ``folder`` (file or folder), None if none."""
    for name in (LAST_CHECKPOINT, LAST_CHECKPOINT + _PREVIOUS):
        path = folder / name
        if path.is_file() or (path / SHARDED_METADATA).is_file():
            return path
    return None


def _metadata(path: Path) -> dict:
    import torch

    source = path / SHARDED_METADATA if path.is_dir() else path
    return torch.load(source, map_location="cpu", weights_only=True)


def step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at."""
    return int(_metadata(path)["global_step"])


def model_state(path: Path) -> dict:
    """The trained model's whole state dict (keys as the model names them), from a file or
    from the shards of a folder, merged into one (no process group needed)."""
    import torch

    if path.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            merged = Path(tmp) / "merged.pt"
            dcp_to_torch_save(path, merged)
            state = torch.load(merged, map_location="cpu", weights_only=True)["model"]
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return trained_model_state(state)


def trained_model_state(module_state: dict) -> dict:
    """The trained model's part of a method module's state dict, keyed as the model names it
    (the module holds it as ``model``; a reference copy, if any, stays out)."""
    prefix = "model."
    return {
        key[len(prefix) :]: value for key, value in module_state.items() if key.startswith(prefix)
    }
