"""finetune-workbench: run, compare and teach fine-tuning methods, tracked in MLflow.

The public API is exported lazily (PEP 562), so importing a low layer (``workbench.spec``,
``workbench.kernels``) never drags in training code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunSpec": "workbench.spec",
    "run": "workbench.runner",
    "RunResult": "workbench.runner",
    "resume": "workbench.runner",
    "evaluate_model": "workbench.runner",
    "register_method": "workbench.registry",
    "MethodParams": "workbench.registry",
    "register_metric": "workbench.objectives",
    "register_reward": "workbench.objectives",
    "RunObserver": "workbench.events",
    "RunContext": "workbench.events",
    "Evaluation": "workbench.events",
    "launch": "workbench.launcher",
    "attach": "workbench.launcher",
    "RunHandle": "workbench.launcher",
    "run_sweep": "workbench.sweep",
    "weight_grid": "workbench.sweep",
    "simplex_grid": "workbench.sweep",
    "simplex_random": "workbench.sweep",
    "run_search": "workbench.search",
    "SearchSettings": "workbench.search",
    "export_run": "workbench.export",
    "merge_runs": "workbench.merges",
    "merge_grid": "workbench.merges",
    "pareto": "workbench.pareto",
    "WorkbenchError": "workbench.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return module if module.__name__.endswith(name) else getattr(module, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
