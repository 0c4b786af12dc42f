"""What can be chosen in a RunSpec, and the code each choice runs: methods, row kinds,
adapters, optimizers, schedulers and loss terms.

Declarations only, no torch: validation, the CLI, the docs and the widgets read these tables
without importing training code. Behaviour is named as a lazy ``"module:attribute"`` string
(or given as the object itself, as a notebook does) and resolved by :func:`resolve` only
when a run needs it. Code that uses a choice looks it up here; it never branches on names.

A method is one :class:`MethodInfo`: its parameters (a :class:`MethodParams` subclass, so the
spec reads ``method: {name: dpo, beta: 0.1}``), the row kind it trains on, its
LightningModule, its loss terms and its reference-model need. Built-in methods and a
user's register the same way, through :func:`register_method` (exported as
``workbench.register_method``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from workbench.models.adapter_params import FullAdapterParams, LoraAdapterParams
from workbench.spec.entries import (
    AdapterInfo,
    AdapterParams,
    MethodInfo,
    MethodParams,
    OptimizerInfo,
    PluginParams,
    Ref,
    RowKind,
    SchedulerInfo,
    TermInfo,
)
from workbench.spec.registration import check_new_name

REFERENCE_KINDS = {
    "none": "no reference model",
    "frozen_copy": "a frozen copy of the base model, run beside the policy every step",
    "adapter_disabled": "the policy with its adapter switched off (LoRA); no second copy in memory",
    "precomputed": "the base model's log-probs computed once over the training rows before training",
}

ROW_KINDS: dict[str, RowKind] = {
    k.name: k
    for k in [
        RowKind(
            "supervised",
            "prompt/completion or chat rows; the loss covers the completion",
            "workbench.data.encode:encode_rows",
            "workbench.data.encode:collate",
        ),
        RowKind(
            "preference",
            "prompt/chosen/rejected pairs; both completions in one batch",
            "workbench.data.encode_pairs:encode_pairs",
            "workbench.data.encode_pairs:collate_pairs",
            "workbench.data.sources:task_pairs",
            "workbench.data.sources:check_pairs",
        ),
        RowKind(
            "scored_preference",
            "preference pairs with per-attribute scores of both completions "
            "(a built-in task scores them by its objectives)",
            "workbench.data.encode_pairs:encode_scored_pairs",
            "workbench.data.encode_pairs:collate_scored_pairs",
            "workbench.data.sources:task_scored_pairs",
            "workbench.data.sources:check_scored_pairs",
        ),
        RowKind(
            "unpaired",
            "completions labelled desirable or not (each preference pair gives one of each)",
            "workbench.data.encode_pairs:encode_unpaired",
            "workbench.data.encode_pairs:collate_unpaired",
            "workbench.data.sources:task_pairs",
            "workbench.data.sources:check_any_rows",
        ),
        RowKind(
            "prompt",
            "prompts only; completions are generated during training",
            "workbench.data.encode_pairs:encode_prompts",
            "workbench.data.encode_pairs:collate_prompts",
            "workbench.data.sources:task_rows_as_they_are",
            "workbench.data.sources:check_any_rows",
        ),
    ]
}

TERMS: dict[str, TermInfo] = {
    t.name: t
    for t in [
        TermInfo("completion", "token NLL over every completion/assistant token"),
        TermInfo("answer", "token NLL over the completion's 'answer' segment (and its end token)"),
        TermInfo("explanation", "token NLL over the completion's 'explanation' segment"),
        TermInfo("preference", "the preference method's loss per pair (per row for KTO)"),
        TermInfo(
            "reward_accuracy",
            "share of pairs whose implicit reward ranks chosen above rejected "
            "(measured, not trained: use it as a term: objective, direction max)",
        ),
        TermInfo(
            "reward_margin", "implicit reward of chosen minus rejected (measured, not trained)"
        ),
        TermInfo(
            "score_margin",
            "MODPO: the objective's score of chosen minus rejected (the pair's score "
            "named like the objective, negated for direction min); its weight "
            "sets the margin",
        ),
        TermInfo(
            "reward",
            "weighted total of the reward objectives per sampled completion (direction min "
            "negated; measured, not trained: held out, a term:reward objective samples "
            "completions of the held-out prompts)",
        ),
        TermInfo(
            "policy",
            "GRPO's clipped policy-gradient loss per sampled completion (plus the KL "
            "penalty when beta > 0)",
        ),
        TermInfo(
            "brevity",
            "position-weighted NLL of stopping: sum_t (t/T) * -log p(eos | prefix_t) over the "
            "completion, so later positions are pushed harder to end the answer",
        ),
    ]
}


class MethodTable(MutableMapping):
    """The methods table. The built-in families' entries are read on first use, so that the
    spec layer imports no method code (the entries name their modules as lazy strings and
    import no torch either)."""

    def __init__(self, builtin_entries: str) -> None:
        self._builtin_entries = builtin_entries
        self._entries: dict[str, MethodInfo] = {}
        self._loaded = False

    def _load(self) -> dict[str, MethodInfo]:
        if not self._loaded:
            self._loaded = True
            builtin = resolve(self._builtin_entries)
            self._entries = {m.name: m for m in builtin} | self._entries
        return self._entries

    def __getitem__(self, name: str) -> MethodInfo:
        return self._load()[name]

    def __setitem__(self, name: str, info: MethodInfo) -> None:
        self._load()[name] = info

    def __delitem__(self, name: str) -> None:
        del self._load()[name]

    def __iter__(self):
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


METHODS: MutableMapping[str, MethodInfo] = MethodTable("workbench.methods.builtin:BUILTIN_METHODS")

ADAPTERS: dict[str, AdapterInfo] = {
    a.name: a
    for a in [
        AdapterInfo(
            "full",
            "Every parameter of the base model trains.",
            FullAdapterParams,
            "workbench.models.adapters:apply_full",
        ),
        AdapterInfo(
            "lora",
            "Low-rank adapters (peft) on the attention and MLP projections; the base is frozen.",
            LoraAdapterParams,
            "workbench.models.adapters:apply_lora",
            "LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021)",
        ),
    ]
}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    o.name: o
    for o in [
        OptimizerInfo(
            "adamw",
            "torch.optim.AdamW (decoupled weight decay).",
            "workbench.running.optimizers:build_adamw",
        ),
        OptimizerInfo("adam", "torch.optim.Adam.", "workbench.running.optimizers:build_adam"),
        OptimizerInfo(
            "sgd", "torch.optim.SGD with momentum.", "workbench.running.optimizers:build_sgd"
        ),
    ]
}

SCHEDULERS: dict[str, SchedulerInfo] = {
    s.name: s
    for s in [
        SchedulerInfo(
            "constant",
            "the peak rate throughout (after warm-up)",
            "workbench.running.schedules:constant",
        ),
        SchedulerInfo(
            "linear", "linear decay to 0 at the last step", "workbench.running.schedules:linear"
        ),
        SchedulerInfo(
            "cosine", "half a cosine from the peak to 0", "workbench.running.schedules:cosine"
        ),
    ]
}

KERNEL_CHOICES = ("auto", "triton", "torch", "off")


def choices(table: Mapping[str, Any]) -> str:
    return ", ".join(sorted(table))


def resolve(ref: Ref) -> Any:
    """The object a table entry names: imports ``"module:attribute"``, passes objects through."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def load_module_class(method: str) -> type:
    """The LightningModule class of ``method`` (the only torch-heavy step)."""
    return resolve(METHODS[method].module)


def ref_module(ref: Ref) -> str:
    """The module a reference lives in (what a fresh process must import to find it)."""
    if isinstance(ref, str):
        return ref.partition(":")[0]
    return getattr(ref, "__module__", "") or ""


# -- registration ----------------------------------------------------------------------------


def register_method(
    name: str,
    *,
    module: Ref,
    params: type[MethodParams] | None = None,
    row_kind: str = "supervised",
    terms: Sequence[str] | Mapping[str, str] = ("completion",),
    reference: str = "none",
    summary: str = "",
    formula: str = "",
    paper: str = "",
    family: str = "custom",
) -> MethodInfo:
    """Register a fine-tuning method under ``name`` (a notebook cell or a module may call it).

    ``module`` is its LightningModule (a subclass of
    ``workbench.methods.base.WorkbenchModule``, or ``"package.module:Class"``);
    ``params`` a :class:`MethodParams` subclass with the method's parameters (each field
    documented with ``Field(description=...)``); ``terms`` the loss terms its
    ``compute_losses`` returns (a mapping adds new terms with their one-line summaries);
    ``reference`` one of :data:`REFERENCE_KINDS`. Registering a name again replaces a user
    method (re-running a cell); built-in methods cannot be replaced.
    """
    check_new_name(name, METHODS, "method")
    if row_kind not in ROW_KINDS:
        raise ValueError(f"unknown row kind '{row_kind}'; allowed: {choices(ROW_KINDS)}")
    if reference not in REFERENCE_KINDS:
        raise ValueError(
            f"unknown reference need '{reference}'; allowed: {choices(REFERENCE_KINDS)}"
        )
    if params is None:
        params = MethodParams
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise TypeError("params must be a subclass of workbench.spec.registry.MethodParams")
    summaries = dict(terms) if isinstance(terms, Mapping) else {t: "" for t in terms}
    if not summaries:
        raise ValueError(f"method '{name}' needs at least one loss term")
    for term, text in summaries.items():
        if term not in TERMS:
            TERMS[term] = TermInfo(term, text or f"loss term of method '{name}'")
    info = MethodInfo(
        name=name,
        family=family,
        summary=summary or f"user method '{name}'",
        formula=formula,
        paper=paper,
        module=module,
        terms=tuple(summaries),
        params=params,
        row_kind=row_kind,
        reference=reference,
    )
    METHODS[name] = info
    return info


__all__ = [
    "ADAPTERS",
    "AdapterInfo",
    "AdapterParams",
    "KERNEL_CHOICES",
    "METHODS",
    "MethodInfo",
    "MethodParams",
    "OPTIMIZERS",
    "OptimizerInfo",
    "PluginParams",
    "REFERENCE_KINDS",
    "ROW_KINDS",
    "Ref",
    "RowKind",
    "SCHEDULERS",
    "SchedulerInfo",
    "TERMS",
    "TermInfo",
    "choices",
    "load_module_class",
    "ref_module",
    "register_method",
    "resolve",
]
