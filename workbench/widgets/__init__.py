"""ipywidgets views over the core (no training logic here).

- :class:`ExperimentBuilder`: the controls of a RunSpec (method, adapter, objectives with
  training-weight sliders, training knobs, kernels); "Show the code" gives YAML and Python.
- :class:`RunMonitor`: background runs with progress bars, live curves and Stop buttons.
- :class:`ParetoExplorer`: the front of finished runs, re-ranked by preference weights; two
  axes picked among more objectives; each run's trajectory across its evaluations.
- :class:`RunCompare`: two or more runs side by side (spec diff, overlaid curves, sample
  completions for the same prompts).

The logic they show lives in plain functions (:mod:`workbench.widgets.forms`,
:mod:`workbench.widgets.run_compare_logic`, :mod:`workbench.fronts.pareto`), so it is tested without
a browser. Imported on first use, so ``import workbench.widgets`` does not pull in ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.widgets.builder import ExperimentBuilder
    from workbench.widgets.explorer import ParetoExplorer
    from workbench.widgets.monitor import RunMonitor
    from workbench.widgets.run_compare import RunCompare

_EXPORTS = {
    "ExperimentBuilder": "workbench.widgets.builder",
    "RunMonitor": "workbench.widgets.monitor",
    "ParetoExplorer": "workbench.widgets.explorer",
    "RunCompare": "workbench.widgets.run_compare",
}
__all__ = ["ExperimentBuilder", "ParetoExplorer", "RunCompare", "RunMonitor"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'workbench.widgets' has no attribute {name!r}")
