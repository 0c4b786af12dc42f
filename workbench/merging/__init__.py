"""The merging lab: combine fine-tuned models (or LoRA adapters) of one base in weight space.

- :mod:`.catalog` names the methods (linear soup, task arithmetic, TIES, DARE linear/TIES,
  breadcrumbs, LiNeS, AdaMerging), each a sparsifier plus a consensus rule, and checks a
  merge's settings (no torch).
- :mod:`.tensors` the sparsifiers, consensus rules and methods on task tensors (peft's
  ``merge_utils`` names and arguments where peft has the method).
- :mod:`.state_dicts` whole models: task vectors, merged weight by weight, LiNeS scaling.
- :mod:`.lora` adapters as task vectors (delta space), or concatenated (factor space).
- :mod:`.adamerging` coefficients learned by entropy minimisation on unlabeled inputs.

Merging finished runs and recording the merged models as runs is
:func:`workbench.merging.runs.merge_runs` (CLI ``workbench merge``).
Submodules are imported on first use, so ``workbench.merging.catalog`` needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "METHODS": "catalog",
    "MergeSettings": "catalog",
    "check_settings": "catalog",
    "task_arithmetic": "tensors",
    "magnitude_prune": "tensors",
    "ties": "tensors",
    "dare_linear": "tensors",
    "dare_ties": "tensors",
    "breadcrumbs": "tensors",
    "merge_task_tensors": "tensors",
    "sparsify": "tensors",
    "task_vector": "state_dicts",
    "merge_task_vectors": "state_dicts",
    "merge_models": "state_dicts",
    "lines_scaling": "state_dicts",
    "lora_deltas": "lora",
    "concat_adapters": "lora",
    "adamerging": "adamerging",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
