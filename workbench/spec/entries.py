"""The types the registry's tables are made of: a plugin's parameter model (a method's or an
adapter's, validated from the spec's section) and the entries of each table (methods, row
kinds, adapters, optimizers, schedulers, loss terms). Declarations only, no torch; importing
this never imports training code. :mod:`workbench.spec.registry` holds the tables themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# -- parameter models ------------------------------------------------------------------------


class PluginParams(BaseModel):
    """Parameters of a chosen plugin (method, adapter): ``name`` plus its own fields.

    Unknown fields are errors, so a typo never falls back to a default silently.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(..., description="Registered name of the choice.")


class MethodParams(PluginParams):
    """Base of every method's parameters; a method without parameters uses it as is."""

    def reference_need(self, declared: str) -> str:
        """The reference model a run needs (one of REFERENCE_KINDS), given the method's
        declared need; a method whose need depends on its parameters overrides it."""
        return declared

    def check_objectives(self, objectives) -> None:
        """Raise ValueError (one line: the problem and its fix) if the spec's objectives
        cannot drive this method; checked when a spec is validated."""


class AdapterParams(PluginParams):
    """Base of every adapter's settings."""

    def works_with_fused_head(self) -> bool:
        """Whether the fused loss head can run with this adapter (it reads ``lm_head`` as a
        plain weight, so an adapter that wraps ``lm_head`` cannot)."""
        return True

    def can_be_disabled(self) -> bool:
        """Whether the trained model can run with the adapter switched off (then a method
        that needs the base as its reference uses that instead of a second copy)."""
        return False


# -- table entries ---------------------------------------------------------------------------

Ref = str | Callable[..., Any] | type  # "module:attribute", or the object itself


@dataclass(frozen=True)
class RowKind:
    """What a method trains on, and how those rows become batches."""

    name: str
    summary: str
    encode: Ref  # (tokenizer, rows, max_length) -> (encoded rows, EncodeStats)
    collate: Ref  # (encoded rows, pad_id) -> dict of tensors
    # (task, train rows, held-out rows, seed) -> both as this kind, from a built-in task's rows
    from_task: Ref = "workbench.data.sources:task_rows_as_they_are"
    # (rows, source) -> None, or a DataError naming the first row a user file gets wrong
    check_rows: Ref = "workbench.data.sources:check_no_pairs"


@dataclass(frozen=True)
class MethodInfo:
    """One fine-tuning method (see the module docstring)."""

    name: str
    family: str
    summary: str
    formula: str
    paper: str
    module: Ref  # its LightningModule class, resolved by :func:`load_module_class`
    terms: tuple[str, ...]  # loss terms it can weight by objectives' training weights
    params: type[MethodParams] = MethodParams
    row_kind: str = "supervised"
    reference: str = "none"  # one of REFERENCE_KINDS
    builtin: bool = False


@dataclass(frozen=True)
class AdapterInfo:
    """Which parameters train, and the function that sets that up on a model."""

    name: str
    summary: str
    params: type[AdapterParams]
    apply: Ref  # (model, params) -> the model to train
    paper: str = ""


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    summary: str
    build: Ref  # (parameters, OptimizerSpec) -> torch.optim.Optimizer


@dataclass(frozen=True)
class SchedulerInfo:
    name: str
    summary: str
    factor: Ref  # (step, warmup_steps, total_steps) -> learning-rate multiplier


@dataclass(frozen=True)
class TermInfo:
    """A loss term a method can scalarise; objectives with ``term`` set weight it."""

    name: str
    summary: str
