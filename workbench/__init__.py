"""finetune-workbench: run, compare and teach fine-tuning methods, tracked in MLflow.

The public API is exported lazily (PEP 562), so importing a low layer (``workbench.spec.run_spec``,
``workbench.kernels``) never drags in training code.
"""

from __future__ import annotations

import importlib
from typing import Any

from workbench.running.allocator import forget_preload
from workbench.running.heap import ask_torch_for_huge_pages

__version__ = "0.1.0"

# Before anything imports torch, where this process imports workbench first: torch reads the
# switch once (workbench.running.heap says what it does and what it was measured to give).
ask_torch_for_huge_pages()
# In a process the workbench started on mimalloc: the programs it starts in turn get their
# usual allocator back (workbench.running.allocator).
forget_preload()

_EXPORTS = {
    "RunSpec": "workbench.spec.run_spec",
    "run": "workbench.running.pipeline",
    "RunResult": "workbench.running.pipeline",
    "resume": "workbench.running.pipeline",
    "evaluate_model": "workbench.running.pipeline",
    "register_method": "workbench.spec.registry",
    "MethodParams": "workbench.spec.registry",
    "register_adapter": "workbench.spec.components",
    "register_optimizer": "workbench.spec.components",
    "register_schedule": "workbench.spec.components",
    "register_selector": "workbench.spec.components",
    "AdapterParams": "workbench.spec.entries",
    "OptimizerParams": "workbench.spec.entries",
    "ScheduleParams": "workbench.spec.entries",
    "SelectorParams": "workbench.spec.entries",
    "register_metric": "workbench.objectives.scoring",
    "register_reward": "workbench.objectives.scoring",
    "RunObserver": "workbench.running.events",
    "RunContext": "workbench.running.events",
    "Evaluation": "workbench.running.events",
    "launch": "workbench.running.launcher",
    "attach": "workbench.running.launcher",
    "RunHandle": "workbench.running.launcher",
    "run_sweep": "workbench.studies.sweep",
    "weight_grid": "workbench.studies.sweep",
    "simplex_grid": "workbench.studies.sweep",
    "simplex_random": "workbench.studies.sweep",
    "run_search": "workbench.studies.search",
    "SearchSettings": "workbench.studies.search",
    "export_run": "workbench.running.export",
    "merge_runs": "workbench.merging.runs",
    "merge_grid": "workbench.merging.runs",
    "pareto": "workbench.fronts.pareto",
    "WorkbenchError": "workbench.spec.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return module if module.__name__.endswith(name) else getattr(module, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
