"""What can be chosen in a RunSpec, and the code each choice runs: methods, row kinds,
adapters, optimizers, schedulers and loss terms.

Declarations only, no torch: validation, the CLI, the docs and the widgets read these tables
without importing training code. Behaviour is named as a lazy ``"module:attribute"`` string
(or given as the object itself, as a notebook does) and resolved by :func:`resolve` only
when a run needs it. Code that uses a choice looks it up here; it never branches on names.

A method is one :class:`MethodInfo`: its parameters (a :class:`MethodParams` subclass, so the
spec reads ``method: {name: dpo, beta: 0.1}``), the row kind it trains on, its loss (a pure
function, ``"module:function"``) and the inputs the loss takes, its LightningModule (the row
kind's generic one when the method is only a loss), its loss terms and its reference-model
need (a strategy of :data:`REFERENCE_KINDS`). Built-in methods and a user's register the same
way, through :func:`register_method` (exported as ``workbench.register_method``); the
built-in families' entries live in each family's folder (``workbench/methods/<family>/entries.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from workbench.spec.entries import (
    AdapterParams,
    MethodInfo,
    MethodParams,
    PluginParams,
    Ref,
    ReferenceKind,
    RowKind,
    TermInfo,
)
from workbench.spec.registration import check_new_name

# How a module gets the reference model's log-probs: each need is a strategy the module is
# handed at construction (workbench.methods.reference), built from the base model before its
# adapter is applied.
REFERENCE_KINDS: dict[str, ReferenceKind] = {
    k.name: k
    for k in [
        ReferenceKind("none", "no reference model", "workbench.methods.reference:no_reference"),
        ReferenceKind(
            "frozen_copy",
            "a frozen copy of the base model, run beside the policy every step",
            "workbench.methods.reference:frozen_copy",
        ),
        ReferenceKind(
            "adapter_disabled",
            "the policy with its adapter switched off (LoRA); no second copy in memory (an "
            "adapter that cannot be switched off keeps a frozen copy instead)",
            "workbench.methods.reference:adapter_disabled",
        ),
        ReferenceKind(
            "precomputed",
            "the base model's log-probs computed once over the training rows before training",
            "workbench.methods.reference:precomputed",
        ),
    ]
}

# What a preference pair's loss can take, each (n,) over the n pairs (see
# workbench.methods.preference.losses): summed completion log-probs under the policy and the
# reference, completion lengths in tokens, and the chosen completion's per-token NLL.
_PAIR_LOSS_INPUTS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
    "chosen_lengths",
    "rejected_lengths",
    "gold_nll",
)
_PREFERENCE_TERMS = ("preference", "reward_accuracy", "reward_margin")

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
            "workbench.methods.preference.module:PreferencePairModule",
            _PAIR_LOSS_INPUTS,
            _PREFERENCE_TERMS,
        ),
        RowKind(
            "scored_preference",
            "preference pairs with per-attribute scores of both completions "
            "(a built-in task scores them by its objectives)",
            "workbench.data.encode_pairs:encode_scored_pairs",
            "workbench.data.encode_pairs:collate_scored_pairs",
            "workbench.data.sources:task_scored_pairs",
            "workbench.data.sources:check_scored_pairs",
            "workbench.methods.preference.module:PreferencePairModule",
            _PAIR_LOSS_INPUTS,
            _PREFERENCE_TERMS,
        ),
        RowKind(
            "unpaired",
            "completions labelled desirable or not (each preference pair gives one of each)",
            "workbench.data.encode_pairs:encode_unpaired",
            "workbench.data.encode_pairs:collate_unpaired",
            "workbench.data.sources:task_pairs",
            "workbench.data.sources:check_any_rows",
            "workbench.methods.preference.module:UnpairedModule",
            # (B,) each: log-probs under the policy and the reference, the desirable labels,
            # and the batch's KL estimate on mismatched prompt/completion pairs (a scalar).
            ("policy_logps", "ref_logps", "desirable", "kl"),
            _PREFERENCE_TERMS,
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


class MethodTable(MutableMapping[str, MethodInfo]):
    """The methods table. The built-in families' entry lists are read on first use, so that
    the spec layer imports no method code (the entries name their modules and losses as lazy
    strings and import no torch either)."""

    def __init__(self, builtin_entries: tuple[str, ...]) -> None:
        self._builtin_entries = builtin_entries
        self._entries: dict[str, MethodInfo] = {}
        self._loaded = False

    def _load(self) -> dict[str, MethodInfo]:
        if not self._loaded:
            self._loaded = True
            builtin = [m for entries in self._builtin_entries for m in resolve(entries)]
            self._entries = {m.name: m for m in builtin} | self._entries
        return self._entries

    def __getitem__(self, name: str) -> MethodInfo:
        return self._load()[name]

    def __setitem__(self, name: str, info: MethodInfo) -> None:
        self._load()[name] = info

    def __delitem__(self, name: str) -> None:
        del self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


METHODS: MutableMapping[str, MethodInfo] = MethodTable(
    (
        "workbench.methods.sft.entries:METHODS",
        "workbench.methods.multi_objective.entries:METHODS",
        "workbench.methods.preference.entries:METHODS",
        "workbench.methods.rl.entries:METHODS",
    )
)

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
    module_class: type = resolve(METHODS[method].module)
    return module_class


def ref_module(ref: Ref) -> str:
    """The module a reference lives in (what a fresh process must import to find it)."""
    if isinstance(ref, str):
        return ref.partition(":")[0]
    return getattr(ref, "__module__", "") or ""


# -- registration ----------------------------------------------------------------------------


def register_method(
    name: str,
    *,
    module: Ref | None = None,
    loss: Ref | None = None,
    loss_inputs: Sequence[str] = (),
    params: type[MethodParams] | None = None,
    row_kind: str = "supervised",
    terms: Sequence[str] | Mapping[str, str] | None = None,
    reference: str = "none",
    summary: str = "",
    formula: str = "",
    paper: str = "",
    family: str = "custom",
) -> MethodInfo:
    """Register a fine-tuning method under ``name`` (a notebook cell or a module may call it).

    A method that is a loss on an existing row kind gives ``loss``, a pure function (or
    ``"package.module:function"``) returning ``(per-example loss, metrics)``, and
    ``loss_inputs``, the keyword arguments it takes from the batch (what the row kind offers:
    ``ROW_KINDS[row_kind].loss_inputs``); the row kind's generic module calls it with those
    and the parameters' fields. A method that does more gives ``module``, its LightningModule
    (a subclass of ``workbench.methods.base.WorkbenchModule``, or ``"package.module:Class"``).
    ``params`` is a :class:`MethodParams` subclass with the method's parameters (each field
    documented with ``Field(description=...)``, named like the loss's argument it sets);
    ``terms`` the loss terms the module returns (default: the row kind's loss terms with a
    ``loss``, else ``completion``; a mapping adds new terms with their one-line summaries);
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
    kind = ROW_KINDS[row_kind]
    loss_inputs = tuple(loss_inputs)
    if loss is not None:
        module = _check_loss(name, kind, module, loss_inputs, reference)
    elif loss_inputs:
        raise ValueError(f"method '{name}': loss_inputs {list(loss_inputs)} given without a loss")
    if module is None:
        raise ValueError(f"method '{name}' needs a loss (with its loss_inputs) or a module")
    if params is None:
        params = MethodParams
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise TypeError("params must be a subclass of workbench.spec.registry.MethodParams")
    if terms is None:
        terms = kind.loss_terms if loss is not None else ("completion",)
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
        loss=loss,
        loss_inputs=loss_inputs,
    )
    METHODS[name] = info
    return info


def _check_loss(
    name: str, kind: RowKind, module: Ref | None, loss_inputs: tuple[str, ...], reference: str
) -> Ref:
    """The module that trains the method's loss (the row kind's, unless one is given), once
    the loss's declared inputs are ones the row kind offers and its reference need allows."""
    if module is None:
        module = kind.loss_module
    if module is None:
        raise ValueError(
            f"method '{name}': row kind '{kind.name}' has no generic loss module; give the "
            "method a module (a WorkbenchModule subclass) that computes its loss"
        )
    if not loss_inputs:
        raise ValueError(
            f"method '{name}' names a loss but not its loss_inputs; allowed: "
            f"{', '.join(kind.loss_inputs)}"
        )
    unknown = [i for i in loss_inputs if i not in kind.loss_inputs]
    if unknown:
        raise ValueError(
            f"method '{name}': loss_inputs {unknown} are not offered by row kind "
            f"'{kind.name}'; allowed: {', '.join(kind.loss_inputs)}"
        )
    wants_reference = [i for i in loss_inputs if i.startswith("ref_") or i == "kl"]
    if wants_reference and reference == "none":
        raise ValueError(
            f"method '{name}': its loss takes {wants_reference}, which come from a reference "
            f"model, and reference is 'none'; allowed: {choices(REFERENCE_KINDS)}"
        )
    return module


__all__ = [
    "AdapterParams",
    "KERNEL_CHOICES",
    "METHODS",
    "MethodInfo",
    "MethodParams",
    "PluginParams",
    "REFERENCE_KINDS",
    "ROW_KINDS",
    "Ref",
    "RowKind",
    "TERMS",
    "TermInfo",
    "choices",
    "load_module_class",
    "ref_module",
    "register_method",
    "resolve",
]
