"""Checks of a valid spec against this machine: the files and folders it names exist.

``RunSpec`` validation judges a spec's form alone (a stored spec must stay readable on any
machine); what only this machine can answer, whether ``data.source`` or ``model.name``
names a file or folder that is here, and whether the packages its rewards need are
installed, is checked by :func:`check` where a run starts (the CLI,
:func:`workbench.launch`). Cheap by design: no torch, no datasets, no store.
"""

from __future__ import annotations

from workbench.data.sources import missing_source
from workbench.models.loading import missing_model
from workbench.objectives import scoring as objectives
from workbench.running import strategies
from workbench.spec.errors import SpecError


def check(spec) -> None:
    """Raise :class:`SpecError` (one line per problem, as validation does) if a data file or
    model folder the spec names is not on this machine, or a package one of its objectives'
    scorers needs is not installed."""
    problems = []
    for field, value, why in (
        ("data.source", spec.data.source, missing_source(spec.data.source)),
        ("model.name", spec.model.name, missing_model(spec.model.name)),
    ):
        if why is not None:
            problems.append(f"  {field} = {value!r}: {why}")
    for i, objective in enumerate(spec.objectives):
        why = objectives.missing_package(objective.source)
        if why is not None:
            problems.append(f"  objectives.{i}.source = {objective.source!r}: {why}")
    why = strategy_problem(spec.train)
    if why is not None:
        problems.append(f"  train.strategy = {spec.train.strategy!r}: {why}")
    if problems:
        raise SpecError("invalid run spec:\n" + "\n".join(problems))


def strategy_problem(train) -> str | None:
    """Why ``train.strategy`` cannot run on this machine (with what to use instead), or None.

    Imports torch only for a strategy that needs CUDA, to ask whether this machine has it."""
    entry = strategies.info(train.strategy)
    if entry is None or not entry.needs_cuda:
        return None
    if train.accelerator == "cpu":
        where = "train.accelerator is 'cpu'"
    else:
        import torch

        if torch.cuda.is_available():
            return None
        where = "this machine has no CUDA GPU"
    return (
        f"{entry.summary}; it runs on CUDA GPUs only (torch's FSDP refuses CPU devices) and "
        f"{where}; use strategy: ddp on CPUs (every process holds the whole model), or run "
        "on a machine with GPUs"
    )
