"""RunSpec: everything that defines one training run, validated before anything runs.

A spec round-trips through YAML exactly (``RunSpec.from_yaml(spec.to_yaml()) == spec``).
Model, data, method, adapter and optimizer are separate, validated choices. A bad field
raises :class:`~workbench.spec.errors.SpecError` naming the field, the value and what is allowed.

Three kinds of weights are kept apart:
- ``ObjectiveSpec.weight`` is a *training weight*: it scales the objective's loss ``term``
  (or reward) inside the method's loss.
- Preference weights over finished runs belong to the Pareto views, applied after the fact.
- A weight-conditioned builder samples training weights from a distribution
  (:mod:`workbench.methods.multi_objective.conditioned`, :mod:`workbench.fronts.conditioned`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from workbench.data.mixture import MIXTURE_SOURCE
from workbench.data.tasks import TASKS
from workbench.models.adapters.full import FullAdapterParams
from workbench.objectives import scoring as objectives
from workbench.spec import components, registry
from workbench.spec.components import AdamParams
from workbench.spec.entries import (
    AdapterParams,
    OptimizerParams,
    PluginParams,
    ScheduleParams,
    SelectorParams,
)
from workbench.spec.errors import SpecError
from workbench.spec.objective_source import direction_sign, parse_source

# What every run measures of its cost (``cost:<name>`` objectives; the fronts of finished
# runs read them for any run, declared or not). step_s and tokens_per_s are over the
# training steps after the first (workbench.running.step_costs).
COST_SOURCES = (
    "trainable_params",
    "peak_mem_mb",
    "train_time_s",
    "train_examples",
    "step_s",
    "tokens_per_s",
)
# Which way each cost is better: less of every cost, except throughput.
COST_DIRECTIONS = {name: "max" if name == "tokens_per_s" else "min" for name in COST_SOURCES}
# Sections a bare string stands for: `model: tiny` is `model: {name: tiny}`.
_SHORTHAND_KEYS = {"model": "name", "data": "source"}


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelSpec(_Section):
    """Shape and pretraining budget of the built-in tiny Llama base (``model.name: tiny``)."""

    hidden_size: int = Field(128, ge=16, le=2048, description="Hidden width.")
    layers: int = Field(2, ge=1, le=24, description="Decoder layers.")
    heads: int = Field(4, ge=1, le=32, description="Attention heads.")
    vocab_size: int = Field(384, ge=300, le=32000, description="BPE vocabulary size.")
    pretrain_steps: int = Field(
        800, ge=0, le=100_000, description="Pretraining steps on the task corpus."
    )
    pretrain_batch: int = Field(64, ge=1, le=4096, description="Pretraining batch size (rows).")
    pretrain_lr: float = Field(3e-3, gt=0, le=1.0, description="Pretraining peak learning rate.")
    seed: int = Field(0, description="Seed of tokenizer corpus, init and pretraining order.")


class ModelSpec(_Section):
    """The base model."""

    name: str = Field(
        "tiny",
        description="A built-in base (`workbench models` lists them), a local folder, or a hub id.",
    )
    trust_remote_code: bool = Field(False, description="Allow code shipped with the model to run.")
    allow_unsafe_weights: bool = Field(
        False, description="Allow pickle (.bin) weights; only safetensors load otherwise."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be 'tiny', a local folder or a hub id, not empty")
        return v


class OnlineBatchSpec(_Section):
    """Each training batch chosen while the run trains, from a larger drawn pool
    (workbench/data/selection/online_batch.py has the rule and its papers)."""

    pool_factor: int = Field(
        4,
        ge=2,
        le=64,
        description="Rows drawn per step for every row trained on: the pool is "
        "train.batch_size x pool_factor rows, scored under the current weights without a "
        "gradient.",
    )
    diversity_weight: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Weight of diversity (distance to the rows already picked) against "
        "utility (the row's current loss); 0 picks the highest-loss rows.",
    )


class DataSpec(_Section):
    """Where the examples come from."""

    source: str = Field(
        "order",
        description=(
            "A built-in task name, a JSONL/CSV/parquet file or folder, or a datasets id owner/name."
        ),
    )
    train_size: int = Field(
        2000,
        ge=1,
        le=10_000_000,
        description="Training rows generated (built-in tasks) or kept at most.",
    )
    eval_size: int = Field(48, ge=1, le=100_000, description="Held-out rows used for objectives.")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="Held-out share of a user dataset.")
    split: str = Field("train", description="Split of a datasets name.")
    select: SerializeAsAny[SelectorParams] | None = Field(
        None,
        description="Keep a subset of the training rows: {name: <selector>, budget: <count or "
        "fraction>, ...} (None: train on them all). Selectors: "
        + registry.choices(components.SELECTORS),
    )
    corrupt_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of a built-in task's training answers made wrong on purpose "
        "(seeded by train.seed), to measure how well a selector finds bad rows.",
    )
    online_batch: OnlineBatchSpec | None = Field(
        None,
        description="Choose each training batch during the run from a pool of pool_factor "
        "times as many drawn rows, by their loss under the current weights (utility) and "
        "their spread (diversity): {pool_factor: 4, diversity_weight: 1.0}. Supervised "
        "methods only (sft, mo-sft); composes with select (pools are drawn from the rows it "
        "keeps). None: train on the drawn batch as it is.",
    )
    mixture: dict[str, float] | None = Field(
        None,
        description="Train on a mixture of built-in tasks: {task: weight, ...}, e.g. "
        "{reverse: 0.5, sort: 0.3, order: 0.2}. Each task gets its weight's share of "
        "train_size (the weights need not sum to 1) and eval_size held-out rows of its own; "
        "a run's objectives are then each task's, named <objective>/<task> (a weight-0 task "
        "is scored without being trained on). data.source reads 'mixture' (it may be left "
        "out). None: data.source alone.",
    )

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        from workbench.data.sources import source_kind

        source_kind(v)  # a mistyped task name fails here, never reaching a dataset hub
        return v

    @field_validator("select", mode="before")
    @classmethod
    def _select(cls, v: Any) -> Any:
        return None if v is None else _plugin_section(v, components.SELECTORS, "selector")

    @model_validator(mode="before")
    @classmethod
    def _mixture_is_the_source(cls, data: Any) -> Any:
        # `data: {mixture: {...}}` needs no source: the mixture is the source.
        if isinstance(data, dict) and data.get("mixture") is not None and "source" not in data:
            data = {**data, "source": MIXTURE_SOURCE}
        return data

    @field_validator("mixture", mode="before")
    @classmethod
    def _mixture(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, Mapping) or not v:
            raise ValueError(
                f"{v!r}: must map built-in task names to weights, e.g. {{reverse: 0.5, sort: 0.5}}"
            )
        for name, weight in v.items():
            if name not in TASKS:
                raise ValueError(f"unknown task '{name}'; allowed: {', '.join(TASKS)}")
            # true/"0.5" would silently become 1.0/0.5: a weight is written as a number.
            if isinstance(weight, (bool, str)) or not isinstance(weight, (int, float)):
                raise ValueError(f"{name}: {weight!r}: a weight must be a number (>= 0)")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{name}: {weight}: a weight must be a finite number >= 0")
        if sum(v.values()) <= 0:
            raise ValueError(
                f"{dict(v)}: the weights sum to 0; give at least one task a positive weight"
            )
        return {name: float(weight) for name, weight in v.items()}

    @property
    def task_rows(self) -> bool:
        """Whether the rows are a built-in task's or a mixture of them (generated, exactly
        ``train_size`` training rows)."""
        return self.source in TASKS or self.mixture is not None

    @model_validator(mode="after")
    def _selection_fits(self) -> DataSpec:
        if self.mixture is not None and self.source != MIXTURE_SOURCE:
            raise ValueError(
                f"data.source = '{self.source}' with data.mixture: a mixture is its own source; "
                f"leave data.source out (or write '{MIXTURE_SOURCE}')"
            )
        if self.mixture is None and self.source == MIXTURE_SOURCE:
            raise ValueError(
                f"data.source = '{MIXTURE_SOURCE}' needs data.mixture, e.g. "
                "{reverse: 0.5, sort: 0.5}; or name one task, a file or a dataset"
            )
        budget = None if self.select is None else self.select.budget
        # A task makes exactly train_size rows; a file's row count is known when it is read.
        if isinstance(budget, int) and self.task_rows and budget > self.train_size:
            raise ValueError(
                f"data.select.budget = {budget}: more than the {self.train_size} training rows "
                f"data.train_size gives; keep at most {self.train_size}, or give a fraction "
                "such as 0.3"
            )
        if self.corrupt_fraction and not self.task_rows:
            raise ValueError(
                f"data.corrupt_fraction = {self.corrupt_fraction}: labels are corrupted in "
                f"built-in tasks' rows only ({', '.join(TASKS)}, or a mixture of them), and "
                f"data.source '{self.source}' is not one; set it to 0"
            )
        return self


def _plugin_section(
    value: Any, table: Mapping[str, Any], what: str, default: str | None = None
) -> Any:
    """Validate a method/adapter/optimizer/schedule section with the settings model its
    registry entry names.

    ``value`` is a name (shorthand for the section with its defaults), a mapping with
    ``name`` (``default`` when it has none and the section has a default choice: the
    optimizer's ``{lr: 0.001}`` is AdamW's), or an already validated parameter object.
    Errors in the inner fields come back as one ``plugin_fields`` error carrying the inner
    errors, so each is reported on its own line under its full location (``method.beta``).
    """
    if isinstance(value, PluginParams):
        value = value.model_dump(mode="json")
    shorthand = isinstance(value, str)
    if shorthand:
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"must be a {what} name or a mapping with a 'name' field")
    if default is not None and "name" not in value:
        value = {"name": default, **value}
    name = value.get("name")
    if not isinstance(name, str) or name not in table:
        message = f"unknown {what} '{name}'; allowed: {registry.choices(table)}"
        if shorthand:
            raise ValueError(message)
        inner = {"type": "value_error", "loc": ("name",), "msg": message, "input": name}
        raise PydanticCustomError(
            "plugin_fields",
            "invalid {what} settings",
            {"what": what, "errors": [inner], "model": PluginParams},
        )
    params_model = table[name].params
    try:
        return params_model.model_validate(value)
    except ValidationError as err:
        raise PydanticCustomError(
            "plugin_fields",
            "invalid {what} settings",
            {"what": what, "errors": err.errors(), "model": params_model},
        ) from None


class ObjectiveSpec(_Section):
    """One objective: what is measured, which way is better, and its training weight."""

    name: str = Field(..., min_length=1, description="Logged as objective/<name>.")
    direction: Literal["min", "max"] = Field(..., description="Which way is better.")
    source: str = Field(
        ...,
        description="metric:<name> or reward:<name> (scored on held-out generations), "
        "term:<name> (a loss term's held-out value), or cost:<name>.",
    )
    term: str | None = Field(None, description="Loss term whose training weight is `weight`.")
    weight: float = Field(1.0, ge=0, description="Training weight of `term` (>= 0, finite).")
    reference: float | None = Field(None, description="Hypervolume reference coordinate.")
    task: str | None = Field(
        None,
        description="With data.mixture: score a metric: or reward: source on this task's "
        "held-out rows only (None: on all of them).",
    )

    @field_validator("weight", "reference", mode="before")
    @classmethod
    def _a_number(cls, v: Any) -> Any:
        # true/"0.5" would silently become 1.0/0.5: a weight must be written as a number.
        if isinstance(v, (bool, str)):
            raise ValueError("must be a number (not text or true/false)")
        return v

    @field_validator("weight", "reference")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @property
    def kind(self) -> str:
        """The kind of the source: ``metric``, ``reward``, ``term`` or ``cost``."""
        return parse_source(self.source).kind

    @property
    def source_name(self) -> str:
        """The name within the source's kind (``correct`` for ``reward:correct``); ``name``
        is the objective's own name."""
        return parse_source(self.source).name

    @property
    def sign(self) -> int:
        """+1 for direction max, -1 for min: a value times its sign grows as it improves."""
        return direction_sign(self.direction)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        kind, name = parse_source(v)
        allowed = {
            "metric": (*objectives.METRICS, "eval_loss"),
            "reward": tuple(objectives.REWARDS),
            "term": tuple(registry.TERMS),
            "cost": COST_SOURCES,
        }
        if kind not in allowed or not name:
            raise ValueError(
                "must look like metric:<name>, reward:<name>, term:<name> or cost:<name>"
            )
        if name not in allowed[kind]:
            if not allowed[kind]:
                raise ValueError(
                    f"no {kind}s are registered; register '{name}' with "
                    f"workbench.register_{kind}(name, fn) first"
                )
            hint = (
                f"; register others with workbench.register_{kind}"
                if kind in ("metric", "reward")
                else ""
            )
            raise ValueError(f"unknown {kind} '{name}'; allowed: {', '.join(allowed[kind])}{hint}")
        return v

    @field_validator("term")
    @classmethod
    def _term(cls, v: str | None) -> str | None:
        return None if v is None else _check_choice(v, registry.TERMS, "term")

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        return None if v is None else _check_choice(v, TASKS, "task")


class TrainSpec(_Section):
    steps: int = Field(150, ge=1, le=10_000_000, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, le=65536, description="Rows per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, le=4096, description="Micro-batches per optimizer step.")
    max_length: int = Field(
        64, ge=4, le=1_000_000, description="Tokens per row; longer rows are truncated and counted."
    )
    group_by_length: bool = Field(
        False,
        description="Batch rows of similar length together, so less of a "
        "batch is padding: each epoch's shuffled rows are sorted by length within "
        "mega-batches of up to 50 global batches, and the batches shuffled (a pair "
        "counts its longer completion). Every row still comes once an epoch.",
    )
    padding_free: bool = Field(
        False,
        description="Feed the model each micro-batch's rows packed end to end instead of "
        "padded to the longest: position ids restart at each row and attention stays within "
        "it (transformers' packed-sequence masks under sdpa/eager, varlen flash attention on "
        "a GPU), and the losses read each row's tokens back, so losses and gradients equal "
        "the padded batch's. Pays where rows differ in length; every method that trains on "
        "sequences (SFT, MO-SFT, the preference family with chosen and rejected in one pass, "
        "GRPO/RAFT's training forward) and the reference passes take it.",
    )
    padding_free_tokens: int | None = Field(
        None,
        ge=2,
        le=10_000_000,
        description="With padding_free: the most tokens in one packed sequence (a longer "
        "row takes a sequence of its own). None: the micro-batch's longest row, so a packed "
        "sequence is never wider than the padded batch (sdpa/eager attention costs the "
        "square of a sequence's width). Varlen flash attention always packs the whole "
        "micro-batch into one sequence.",
    )
    scheduler: SerializeAsAny[ScheduleParams] = Field(
        default_factory=lambda: ScheduleParams(name="constant"),
        description="Learning-rate schedule and its settings, e.g. {name: cosine} or the "
        "shorthand 'cosine'. Schedules: " + registry.choices(components.SCHEDULERS),
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this (None: off)."
    )
    eval_every: int = Field(
        50, ge=1, description="Evaluate objectives every N steps (and at the end)."
    )
    log_every: int = Field(
        1,
        ge=1,
        description=(
            "Log train metrics every N steps (logging is buffered, so every step is cheap)."
        ),
    )
    checkpoint_every: int | None = Field(
        None, ge=1, description="Save a checkpoint every N steps (None: only at the end)."
    )
    seed: int = Field(0, description="Seed of data order, initialisation and sampling.")
    precision: str = Field(
        "32-true",
        description="Lightning precision: 32-true, bf16-mixed, 16-mixed, bf16-true. "
        "bf16-mixed runs each training step under bfloat16 autocast (on a CPU too) with "
        "float32 weights and optimizer state; evaluations run in float32. 16-mixed needs a "
        "GPU (Lightning runs bf16-mixed on a CPU instead). bf16 on a CPU is fast only with "
        "bfloat16 instructions (AVX-512 BF16, AMX); without them the run warns that torch "
        "emulates them (27x the float32 step in BENCHMARKS.md).",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations during the backward pass "
        "instead of keeping them from the forward (transformers' activation checkpointing, "
        "non-reentrant): less memory for activations, for about one more forward pass of "
        "time per step. Training steps only; evaluations and generation run without it. The "
        "model must support it (transformers' supports_gradient_checkpointing).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model's decoder for training steps (evaluations and "
        "generation run it uncompiled). The first steps pay for the compilation. Where it "
        "cannot apply (no C++ compiler, a platform without TorchInductor, Triton kernels, a "
        "sharding strategy, a compilation error) the run trains uncompiled and says why in "
        "its log and its workbench.compile tag.",
    )
    reuse_freed_memory: bool = Field(
        True,
        description="Keep the memory a step frees in the process's heap for the next step "
        "(glibc's mmap threshold at 32 MiB, its trim threshold at 2 GiB): no page is faulted "
        "in twice, 2-5% off a CPU step (BENCHMARKS.md, train options), but the heap "
        "fragments and the process's peak rises. false gives every block of 1 MiB and more "
        "back when freed: the lowest peak, each step faulting its pages in again (full "
        "fine-tuning DPO at SmolLM2-135M's shape: peak 7.9 to 6.5 GiB, 23% slower). Set "
        "per run for the process; glibc only (elsewhere nothing changes).",
    )
    accelerator: str = Field("auto", description="cpu, gpu or auto.")
    devices: int | str = Field(1, description="Lightning devices (an int or 'auto').")
    strategy: str = Field(
        "auto",
        description="Lightning strategy: auto, ddp, fsdp, fsdp_cpu_offload (FSDP "
        "needs CUDA GPUs), or another name Lightning knows.",
    )
    num_nodes: int = Field(
        1,
        ge=1,
        le=100_000,
        description="Machines the run spans, `devices` processes on "
        "each; more than 1 is started on every node by torchrun or SLURM (docs/scaling.md).",
    )
    dist_timeout_s: int = Field(
        300,
        ge=10,
        le=86_400,
        description="Seconds a process waits for the others at "
        "a collective before the run fails (a peer that vanished); longer than an evaluation.",
    )

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler(cls, v: Any) -> Any:
        return _plugin_section(v, components.SCHEDULERS, "scheduler", default="constant")

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        allowed = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
        if v not in allowed:
            raise ValueError(f"unknown precision '{v}'; allowed: {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _packing_budget(self) -> TrainSpec:
        if self.padding_free_tokens is not None and not self.padding_free:
            raise ValueError(
                f"padding_free_tokens = {self.padding_free_tokens} sizes padding-free "
                "batches; set padding_free: true with it, or leave padding_free_tokens out"
            )
        return self


class EvalSpec(_Section):
    """Decoding settings shared by every method's evaluation."""

    max_new_tokens: int = Field(24, ge=1, le=4096, description="Tokens generated per prompt.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    batch_size: int = Field(64, ge=1, description="Prompts generated at once.")
    samples_logged: int = Field(8, ge=0, description="Sample completions logged as a table.")


class TrackingSpec(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI (MLFLOW_TRACKING_URI wins).")
    experiment: str = Field("workbench", min_length=1, description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags.")
    log_model: bool = Field(True, description="Log the trained weights/adapter as an artifact.")


class RunSpec(_Section):
    """One training run. See the module docstring for the weight vocabulary."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    method: SerializeAsAny[registry.MethodParams] | None = Field(
        None,
        description="Method and its parameters, e.g. {name: mo-sft} or the shorthand 'mo-sft' "
        "(None: the task's default, else sft). Methods: " + registry.choices(registry.METHODS),
    )
    adapter: SerializeAsAny[AdapterParams] = Field(
        default_factory=lambda: FullAdapterParams(name="full"),
        description="Which parameters train, e.g. {name: lora, r: 8} or 'lora'. Adapters: "
        + registry.choices(components.ADAPTERS),
    )
    optimizer: SerializeAsAny[OptimizerParams] = Field(
        default_factory=lambda: AdamParams(name="adamw"),
        description="Optimizer and its settings, e.g. {name: sgd, lr: 0.05, momentum: 0.5} or "
        "'sgd'. Optimizers: " + registry.choices(components.OPTIMIZERS),
    )
    objectives: list[ObjectiveSpec] = Field(
        default_factory=list, description="Empty: the task's own."
    )
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    kernels: Literal["auto", "triton", "torch", "off"] = Field(
        "auto",
        description="Fused kernels: auto (the ops that pay on this device: every op through Triton "
        "on CUDA; on a CPU the chunked fused head from a 2048-entry vocabulary up; an op "
        "that cannot run is left out and named in the kernel tag), triton, torch, off.",
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("kernels", mode="before")
    @classmethod
    def _kernels_off(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `kernels: off` as the boolean false.
        return "off" if v is False else v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `model: tiny`, `data: order` mean that section with its defaults (method, adapter,
        # optimizer and schedule take names in their own validators).
        if isinstance(data, dict):
            data = dict(data)
            for section, key in _SHORTHAND_KEYS.items():
                if isinstance(data.get(section), str):
                    data[section] = {key: data[section]}
        return data

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return None if v is None else _plugin_section(v, registry.METHODS, "method")

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter(cls, v: Any) -> Any:
        return _plugin_section(v, components.ADAPTERS, "adapter")

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer(cls, v: Any) -> Any:
        return _plugin_section(v, components.OPTIMIZERS, "optimizer", default="adamw")

    @model_validator(mode="after")
    def _fill_and_check_objectives(self) -> RunSpec:
        task = TASKS.get(self.data.source)
        mixture = self.data.mixture
        if self.method is None:
            default = task.default_method if task is not None else "sft"
            object.__setattr__(self, "method", _plugin_section(default, registry.METHODS, "method"))
        assert self.method is not None  # given, or the default filled in just above
        if not self.objectives:
            own_terms = registry.METHODS[self.method.name].terms
            # A mixture offers each task's objectives, scored on that task's rows.
            offered = (
                [(TASKS[name], name) for name in mixture]
                if mixture is not None
                else [(task, None)]
                if task is not None
                else []
            )
            if offered:
                # A task's objective trains its term only under methods that have that term
                # (a preference method on `order` measures correctness and length, and its
                # own loss trains).
                objectives = [
                    ObjectiveSpec(
                        name=o.name if scored_on is None else f"{o.name}/{scored_on}",
                        direction=o.direction,
                        source=f"metric:{o.metric}",
                        term=o.term if o.term in own_terms else None,
                        weight=o.weight,
                        reference=o.reference,
                        task=scored_on,
                    )
                    for offering, scored_on in offered
                    for o in offering.objectives
                ]
            else:
                objectives = [
                    ObjectiveSpec(
                        name="eval_loss",
                        direction="min",
                        source="metric:eval_loss",
                        term="completion" if "completion" in own_terms else None,
                    )
                ]
            # Bypass validate_assignment recursion: the values are already validated.
            object.__setattr__(self, "objectives", objectives)
        names = [o.name for o in self.objectives]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"objectives: duplicate names {dupes}; each objective needs its own name"
            )
        for o in self.objectives:
            if o.task is None:
                continue
            if mixture is None or o.task not in mixture:
                tasks = "" if mixture is None else f" ({', '.join(mixture)})"
                raise ValueError(
                    f"objectives[{o.name}].task = '{o.task}': an objective is scored on one "
                    f"task of data.mixture{tasks} only; name one of them, or leave task out"
                )
            if o.kind not in ("metric", "reward"):
                raise ValueError(
                    f"objectives[{o.name}].task = '{o.task}': only metric: and reward: sources "
                    f"are scored per task, not {o.source}; leave task out"
                )
        method = registry.METHODS[self.method.name]
        for o in self.objectives:
            measured = o.source_name if o.kind == "term" else None
            for field_name, term in (("term", o.term), ("source", measured)):
                if term is not None and term not in method.terms:
                    raise ValueError(
                        f"objectives[{o.name}].{field_name}: method '{self.method.name}' has no "
                        f"term '{term}'; its terms are: {', '.join(method.terms)}"
                    )
        weighted = [o for o in self.objectives if o.term is not None]
        if weighted and sum(o.weight for o in weighted) <= 0:
            raise ValueError(
                "objectives: all training weights are 0; give at least one objective with a "
                "term a positive weight"
            )
        self.method.check_objectives(self.objectives)  # e.g. RL methods need a reward objective
        self.optimizer.check_train(self.train)  # e.g. MeZO steps once per micro-batch
        return self

    @model_validator(mode="after")
    def _online_batch_rows(self) -> RunSpec:
        # Defined after the objectives' check, which fills in the task's default method.
        if self.data.online_batch is None or self.method is None:
            return self
        row_kind = registry.METHODS[self.method.name].row_kind
        if row_kind != "supervised":
            raise ValueError(
                f"data.online_batch picks rows of a supervised batch, and method "
                f"'{self.method.name}' trains on {row_kind} rows; use it with sft or mo-sft, "
                "or leave data.online_batch out"
            )
        return self

    # -- construction helpers that turn pydantic errors into SpecError ---------------------

    @classmethod
    def parse(cls, data: dict[str, Any] | None) -> RunSpec:
        """Validate a plain dict; raise :class:`SpecError` with one line per bad field."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SpecError(f"a run spec must be a mapping of sections, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise SpecError(format_validation_error(err)) from None

    @classmethod
    def from_yaml(cls, text: str, source: str | Path | None = None) -> RunSpec:
        """Parse and validate YAML text; ``source`` (the file it came from) is named in a
        syntax error."""
        return cls.parse(load_yaml(text, source))

    @classmethod
    def from_file(cls, path: str | Path) -> RunSpec:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist; pass the path of a YAML run spec")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"spec file {path} cannot be read as UTF-8 text: {err}") from None
        return cls.from_yaml(text, source=path)

    def to_yaml(self) -> str:
        text: str = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return text

    def updated(self, **changes: Any) -> RunSpec:
        """A validated copy with dotted-path changes, e.g. ``updated(**{"train.steps": 10})``."""
        data = self.model_dump(mode="json")
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise SpecError(
                        f"cannot set '{dotted}': '{key}' holds {node!r}, not a section of fields"
                    )
            node[leaf] = value
        return RunSpec.parse(data)

    def flat_params(self) -> dict[str, str]:
        """The spec as flat ``section.field`` -> string pairs (MLflow params)."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{v.get('name', i)}", v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump(mode="json"))
        return out

    def objective(self, name: str) -> ObjectiveSpec:
        for o in self.objectives:
            if o.name == name:
                return o
        raise SpecError(
            f"no objective named '{name}'; objectives: {[o.name for o in self.objectives]}"
        )


def load_yaml(text: str, source: str | Path | None = None) -> Any:
    """The data of a YAML document; a syntax error raises :class:`SpecError` naming the file
    (``source``), the line and the column (counted from 1, as editors count them)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        raise SpecError(yaml_error_message(err, source)) from None
    except yaml.YAMLError as err:
        where = f"spec file {source}" if source is not None else "the spec"
        raise SpecError(f"{where} is not valid YAML: {err}") from None


def yaml_error_message(err: yaml.MarkedYAMLError, source: str | Path | None = None) -> str:
    """One line: where the YAML syntax error is, what PyYAML found, and what it was parsing
    (PyYAML's own text names ``<unicode string>`` and spreads over five lines)."""
    mark = err.problem_mark or err.context_mark
    where = f"spec file {source}" if source is not None else "the spec"
    if mark is not None:
        where += f", line {mark.line + 1}, column {mark.column + 1}"
    problem = err.problem or err.context or "a syntax error"
    message = f"{where}: not valid YAML: {problem}"
    context = err.context_mark
    if err.problem and err.context and context is not None:
        message += (
            f" ({err.context} that starts at line {context.line + 1}, column {context.column + 1})"
        )
    return message


def _check_choice(value: str, table: dict[str, Any], what: str) -> str:
    if value not in table:
        raise ValueError(f"unknown {what} '{value}'; allowed: {registry.choices(table)}")
    return value


def format_validation_error(err: ValidationError) -> str:
    lines = ["invalid run spec:"]
    for e in err.errors():
        if e["type"] == "plugin_fields":
            # A plugin's own fields (method, adapter, optimizer, schedule): one line each,
            # under the section's location.
            section, inner_model = tuple(e["loc"]), e["ctx"]["model"]
            allowed: list[str] = sorted(inner_model.model_fields)
            for inner in e["ctx"]["errors"]:
                # (_error_line calls the lambda at once: `allowed` is this iteration's.)
                lines.append(
                    _error_line(section + tuple(inner["loc"]), inner, lambda loc: allowed)  # noqa: B023
                )
        else:
            lines.append(_error_line(tuple(e["loc"]), e, lambda loc: _fields_at(loc)))
    return "\n".join(lines)


def _error_line(
    loc: tuple[int | str, ...],
    e: ErrorDetails,
    fields_at: Callable[[tuple[int | str, ...]], list[str]],
) -> str:
    where = ".".join(str(p) for p in loc) or "(spec)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        allowed = fields_at(loc[:-1])
        msg = "unknown field; check its spelling" + (
            f"; allowed: {', '.join(allowed)}" if allowed else " against the docs"
        )
    value = e.get("input")
    if isinstance(value, dict):
        # A rule over a whole section (or the whole spec) failed: its input is that section,
        # which would bury the message; the message itself names the fields and values.
        return f"  {msg}" if not loc else f"  {where}: {msg}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"  {where} = {shown}: {msg}"


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the section at ``loc`` (list indices skipped); [] if not a section."""
    model: type[BaseModel] = RunSpec
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        inner = [info.annotation, *get_args(info.annotation)]
        sections = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if not sections:
            return []
        model = sections[0]
    return sorted(model.model_fields)
