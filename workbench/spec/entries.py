"""The types the registry's tables are made of: a plugin's parameter model (a method's or an
adapter's, validated from the spec's section) and the entries of each table (methods, row
kinds, reference needs, adapters, optimizers, schedulers, loss terms). Declarations only, no
torch; importing this never imports training code. :mod:`workbench.spec.registry` holds the
tables themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from workbench.spec.run_spec import ObjectiveSpec

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

    def check_objectives(self, objectives: Sequence[ObjectiveSpec]) -> None:
        """Raise ValueError (one line: the problem and its fix) if the spec's objectives
        cannot drive this method; checked when a spec is validated."""

    def loss_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the method's loss function takes from its parameters: every
        field but ``name`` (so a field is named like the loss's argument it sets)."""
        return self.model_dump(exclude={"name"})


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

    def needs_calibration(self) -> bool:
        """Whether setting the adapter up reads a few of the run's training rows (an
        initialisation from the layers' inputs): then its apply function takes them as
        ``calibration``, a list of batches with ``input_ids`` and ``attention_mask``."""
        return False

    def merges_into_weights(self) -> bool:
        """Whether the trained adapter folds into the base's weights, so the run exports as a
        plain model (prompt and prefix tuning add inputs instead: they cannot)."""
        return True


class OptimizerParams(PluginParams):
    """Base of every optimizer's settings: the peak learning rate, which the schedule scales
    (a sweep or a search varies it as ``optimizer.lr``)."""

    lr: float = Field(3e-4, gt=0, le=10, description="Peak learning rate.")

    def check_train(self, train: Any) -> None:
        """Raise ValueError (one line: the field, its value and what is allowed) if the spec's
        ``train`` section cannot run with this optimizer; checked when a spec is validated."""

    def for_train(self, train: Any) -> OptimizerParams:
        """These settings as a run with ``train`` builds its optimizer: a default an optimizer
        resolves from the train section (e.g. Adam's ``fused``) resolved; the spec itself keeps
        what the user wrote."""
        return self

    @model_validator(mode="before")
    @classmethod
    def _drop_former_defaults(cls, data: Any) -> Any:
        # Specs once had one optimizer section with every field (betas, momentum) whatever
        # the optimizer; a finished run's stored spec still lists them at their defaults.
        if isinstance(data, dict):
            data = {
                k: v
                for k, v in data.items()
                if k in cls.model_fields or not _is_former_default(k, v)
            }
        return data


_FORMER_OPTIMIZER_DEFAULTS = {"weight_decay": 0.0, "betas": [0.9, 0.999], "momentum": 0.9}


def _is_former_default(key: str, value: Any) -> bool:
    default = _FORMER_OPTIMIZER_DEFAULTS.get(key)
    if isinstance(value, tuple):
        value = list(value)
    return default is not None and value == default


class ScheduleParams(PluginParams):
    """Base of every learning-rate schedule's settings; a schedule without settings uses it
    as is. Its fields reach the schedule's factor as keyword arguments."""


class SelectorParams(PluginParams):
    """Base of every data selector's settings (the spec's ``data.select``): how many training
    rows to keep, as a count or a fraction of the rows there are."""

    budget: int | float = Field(
        ...,
        description="Rows to keep: a count (an integer, e.g. 60) or a fraction of the "
        "training rows written with a decimal point (0.3; 1.0 keeps them all).",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_a_number(cls, v: Any) -> Any:
        # true would silently be the count 1, "0.3" the fraction: a budget is written as a number.
        if isinstance(v, (bool, str)):
            raise ValueError("must be a count (60) or a fraction (0.3), not text or true/false")
        return v

    @field_validator("budget")
    @classmethod
    def _budget_in_range(cls, v: int | float) -> int | float:
        if isinstance(v, int) and v < 1:
            raise ValueError("a count of rows must be at least 1")
        if isinstance(v, float) and not 0 < v <= 1:
            raise ValueError(
                "a fraction must be in (0, 1]; write a count of rows as an integer (60, not 60.0)"
            )
        return v


# -- table entries ---------------------------------------------------------------------------

Ref = str | Callable[..., Any] | type  # "module:attribute", or the object itself


@dataclass(frozen=True)
class RowKind:
    """What a method trains on, and how those rows become batches.

    A row kind with a ``loss_module`` trains any loss declared by a method's entry: the
    module computes the inputs the entry names (from ``loss_inputs``, what it can offer) and
    calls the loss with them and the method's parameters (:meth:`MethodParams.loss_kwargs`).
    """

    name: str
    summary: str
    encode: Ref  # (tokenizer, rows, max_length) -> (encoded rows, EncodeStats)
    collate: Ref  # (encoded rows, pad_id) -> dict of tensors
    # (task, train rows, held-out rows, seed) -> both as this kind, from a built-in task's rows
    from_task: Ref = "workbench.data.sources:task_rows_as_they_are"
    # (rows, source) -> None, or a DataError naming the first row a user file gets wrong
    check_rows: Ref = "workbench.data.sources:check_no_pairs"
    # The LightningModule that trains an entry's ``loss`` on these rows (None: no generic one).
    loss_module: Ref | None = None
    # The keyword arguments that module can give a loss, each a tensor per row or pair.
    loss_inputs: tuple[str, ...] = ()
    # The terms that module returns (a method registered with a loss has these).
    loss_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReferenceKind:
    """A way to get the reference model's log-probs (a method's reference need).

    ``strategy`` builds the object a module is handed at construction:
    ``(base model before its adapter, AdapterParams) -> workbench.methods.reference.Reference``.
    """

    name: str
    summary: str
    strategy: Ref


@dataclass(frozen=True)
class MethodInfo:
    """One fine-tuning method: its LightningModule, its loss and what the loss takes.

    A method that is only a loss names it (``loss``, a pure function returning per-example
    losses and a dict of metrics) and the inputs it takes from the batch (``loss_inputs``,
    keyword names its row kind offers, :attr:`RowKind.loss_inputs`); its ``module`` is then
    the row kind's generic one, which calls ``loss(**inputs, **params.loss_kwargs())``.
    """

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
    loss: Ref | None = None  # "module:function", called by the row kind's loss module
    loss_inputs: tuple[str, ...] = ()  # the keyword arguments ``loss`` takes from the batch
    builtin: bool = False


@dataclass(frozen=True)
class AdapterInfo:
    """Which parameters train, and the function that sets that up on a model."""

    name: str
    summary: str
    params: type[AdapterParams]
    apply: Ref  # (model, params) -> the model to train
    paper: str = ""
    builtin: bool = False
    # (the model ``apply`` returned, params) -> a TrainableSchedule
    # (workbench.models.adapters.schedule) that switches which parameters train as the run's
    # steps go by (HFT's stages, LISA's periods); None: the set ``apply`` chose stays.
    schedule: Ref | None = None
    # (the trained model, params) -> the base's own class with the adapter folded into its
    # weights (SSF); None: the trained model already is one, or is a peft model (which merges
    # itself).
    merge: Ref | None = None


@dataclass(frozen=True)
class OptimizerInfo:
    """An optimizer, its settings and the function that builds it."""

    name: str
    summary: str
    params: type[OptimizerParams]
    build: Ref  # (trainable parameters, its OptimizerParams) -> torch.optim.Optimizer
    builtin: bool = False
    # True: its ``step(closure)`` evaluates the loss itself, with no backward (MeZO's two
    # forward passes); the module then trains under Lightning's manual optimisation, handing
    # it a closure that returns the micro-batch's loss.
    trains_without_backward: bool = False


@dataclass(frozen=True)
class SchedulerInfo:
    """A learning-rate schedule, its settings and its multiplier of the peak rate."""

    name: str
    summary: str
    params: type[ScheduleParams]
    # (step, warmup_steps, total_steps, **settings) -> multiplier of the peak learning rate
    factor: Ref
    builtin: bool = False


@dataclass(frozen=True)
class SelectorInfo:
    """A data selector: which training rows a run keeps, and the function that chooses them.

    ``select`` is ``(candidates, count, seed, settings) -> Selection``
    (:mod:`workbench.data.selection.selecting`).
    """

    name: str
    summary: str
    params: type[SelectorParams]
    select: Ref
    paper: str = ""
    builtin: bool = False


@dataclass(frozen=True)
class TermInfo:
    """A loss term a method can scalarise; objectives with ``term`` set weight it."""

    name: str
    summary: str
