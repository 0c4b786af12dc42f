"""Data selectors: which of a run's training rows it trains on, under a data budget.

One file per selector (its settings, its idea and the paper it follows), the shared entry
point in :mod:`~workbench.data.selection.selecting` (:func:`select_rows`, the budget, the
:class:`Selection` every selector returns), and what several selectors compute from the base
model in :mod:`~workbench.data.selection.features` and :mod:`~workbench.data.selection.clusters`.
The table of selectors is ``workbench.spec.components.SELECTORS`` (the spec's ``data.select``).
A selector's file imports numpy, torch and the feature code inside its functions: the spec
imports its settings, and validating a spec never imports torch.
"""
