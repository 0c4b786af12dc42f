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
from collections.abc import Mapping, Sequence
from typing import Any

from workbench.method_params import (  # re-exported: the registry is where users look them up
    ASFTParams,
    ConditionedSFTParams,
    DPOParams,
    FullAdapterParams,
    GRPOParams,
    HingeParams,
    IPOParams,
    KTOParams,
    LoraAdapterParams,
    MGDASFTParams,
    MODPOParams,
    MultiObjectiveSFTParams,
    ORPOParams,
    RAFTParams,
    RobustDPOParams,
    RPOParams,
    SimPOParams,
    TPOParams,
)
from workbench.plugin_types import (  # re-exported likewise
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

REFERENCE_KINDS = {
    "none": "no reference model",
    "frozen_copy": "a frozen copy of the base model, run beside the policy every step",
    "adapter_disabled": "the policy with its adapter switched off (LoRA); no second copy in memory",
    "precomputed": "the base model's log-probs computed once over the training rows before training",
}

ROW_KINDS: dict[str, RowKind] = {
    k.name: k
    for k in [
        RowKind("supervised", "prompt/completion or chat rows; the loss covers the completion",
                "workbench.data.encode:encode_rows", "workbench.data.encode:collate"),
        RowKind("preference", "prompt/chosen/rejected pairs; both completions in one batch",
                "workbench.data.encode_pairs:encode_pairs", "workbench.data.encode_pairs:collate_pairs",
                "workbench.data.sources:task_pairs", "workbench.data.sources:check_pairs"),
        RowKind("scored_preference", "preference pairs with per-attribute scores of both completions "
                                     "(a built-in task scores them by its objectives)",
                "workbench.data.encode_pairs:encode_scored_pairs",
                "workbench.data.encode_pairs:collate_scored_pairs",
                "workbench.data.sources:task_scored_pairs", "workbench.data.sources:check_scored_pairs"),
        RowKind("unpaired", "completions labelled desirable or not (each preference pair gives one of each)",
                "workbench.data.encode_pairs:encode_unpaired", "workbench.data.encode_pairs:collate_unpaired",
                "workbench.data.sources:task_pairs", "workbench.data.sources:check_any_rows"),
        RowKind("prompt", "prompts only; completions are generated during training",
                "workbench.data.encode_pairs:encode_prompts", "workbench.data.encode_pairs:collate_prompts",
                "workbench.data.sources:task_rows_as_they_are", "workbench.data.sources:check_any_rows"),
    ]
}

TERMS: dict[str, TermInfo] = {
    t.name: t
    for t in [
        TermInfo("completion", "token NLL over every completion/assistant token"),
        TermInfo("answer", "token NLL over the completion's 'answer' segment (and its end token)"),
        TermInfo("explanation", "token NLL over the completion's 'explanation' segment"),
        TermInfo("preference", "the preference method's loss per pair (per row for KTO)"),
        TermInfo("reward_accuracy", "share of pairs whose implicit reward ranks chosen above rejected "
                                    "(measured, not trained: use it as a term: objective, direction max)"),
        TermInfo("reward_margin", "implicit reward of chosen minus rejected (measured, not trained)"),
        TermInfo("score_margin", "MODPO: the objective's score of chosen minus rejected (the pair's score "
                                 "named like the objective, negated for direction min); its weight "
                                 "sets the margin"),
        TermInfo("reward", "weighted total of the reward objectives per sampled completion (direction min "
                           "negated; measured, not trained: held out, a term:reward objective samples "
                           "completions of the held-out prompts)"),
        TermInfo("policy", "GRPO's clipped policy-gradient loss per sampled completion (plus the KL "
                           "penalty when beta > 0)"),
        TermInfo(
            "brevity",
            "position-weighted NLL of stopping: sum_t (t/T) * -log p(eos | prefix_t) over the "
            "completion, so later positions are pushed harder to end the answer",
        ),
    ]
}

# Terms of multi-objective SFT and of its variants that build fronts in other ways.
_MO_SFT_TERMS = ("answer", "explanation", "brevity", "completion")
# Terms every preference method returns: its loss, and two measures of its implicit reward.
_PREFERENCE_TERMS = ("preference", "reward_accuracy", "reward_margin")

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo(
            name="sft",
            family="supervised",
            summary="Supervised fine-tuning on the completion tokens.",
            formula="L = mean_i mean_{t in completion_i} -log p(y_t | y_<t, x_i)",
            paper="(standard maximum-likelihood fine-tuning)",
            module="workbench.lightning_modules.sft:SFTModule",
            terms=("completion",),
            builtin=True,
        ),
        MethodInfo(
            name="mo-sft",
            family="multi-objective",
            summary="Multi-objective SFT: loss terms scalarised by the objectives' training weights.",
            formula="L = sum_k w_k * L_k / sum_k w_k, L_k in {answer, explanation, brevity, completion}",
            paper="MORepair: Teaching LLMs to Repair Code via Multi-Objective Fine-tuning (Yang et al., 2024)",
            module="workbench.lightning_modules.sft:MultiObjectiveSFTModule",
            terms=_MO_SFT_TERMS,
            params=MultiObjectiveSFTParams,
            builtin=True,
        ),
        MethodInfo(
            name="conditioned-sft",
            family="multi-objective",
            summary="Weight-conditioned SFT: each example draws its training weights (Dirichlet) and "
                    "sees them in its prompt; one model answers for any weights.",
            formula="L_i = sum_k w_ik L_ik, w_i ~ Dirichlet(alpha), prompt_i = '<w answer 30 brevity 70>' + x_i",
            paper="Rewards-in-Context: Multi-objective Alignment of Foundation Models with Dynamic "
                  "Preference Adjustment (Yang et al., 2024)",
            module="workbench.lightning_modules.conditioned:ConditionedSFTModule",
            terms=_MO_SFT_TERMS,
            params=ConditionedSFTParams,
            builtin=True,
        ),
        MethodInfo(
            name="mgda-sft",
            family="multi-objective",
            summary="MGDA in a preference region: the min-norm combination of the terms' gradients, "
                    "kept in the region of the objectives' weights (PMTL).",
            formula="d = argmin_{d in hull(grad L_k, grad G_j active)} |d|, G_j = (u_j - u)^T L, u ~ 1/w",
            paper="Pareto Multi-Task Learning (Lin et al., 2019); Multi-Task Learning as "
                  "Multi-Objective Optimization (Sener & Koltun, 2018)",
            module="workbench.lightning_modules.mgda:MGDASFTModule",
            terms=_MO_SFT_TERMS,
            params=MGDASFTParams,
            builtin=True,
        ),
        MethodInfo(
            name="dpo",
            family="preference",
            summary="DPO on preference pairs (label_smoothing > 0: conservative DPO).",
            formula="L = -(1-eps) log sig(beta h) - eps log sig(-beta h), h = log-ratio(y_w) - log-ratio(y_l)",
            paper="Direct Preference Optimization: Your Language Model is Secretly a Reward Model (Rafailov et al., 2023)",
            module="workbench.lightning_modules.preference:DPOModule",
            terms=_PREFERENCE_TERMS,
            params=DPOParams,
            row_kind="preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="ipo",
            family="preference",
            summary="IPO: a squared loss that keeps the log-ratio gap at 1/(2 beta).",
            formula="L = (h - 1/(2 beta))^2",
            paper="A General Theoretical Paradigm to Understand Learning from Human Preferences (Azar et al., 2023)",
            module="workbench.lightning_modules.preference:IPOModule",
            terms=_PREFERENCE_TERMS,
            params=IPOParams,
            row_kind="preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="hinge",
            family="preference",
            summary="Hinge loss on the DPO log-ratios (SLiC-style).",
            formula="L = max(0, 1 - beta h)",
            paper="SLiC-HF: Sequence Likelihood Calibration with Human Feedback (Zhao et al., 2023)",
            module="workbench.lightning_modules.preference:HingeModule",
            terms=_PREFERENCE_TERMS,
            params=HingeParams,
            row_kind="preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="robust-dpo",
            family="preference",
            summary="Robust DPO: unbiased under labels flipped with probability eps.",
            formula="L = [-(1-eps) log sig(beta h) + eps log sig(-beta h)] / (1 - 2 eps)",
            paper="Provably Robust DPO: Aligning Language Models with Noisy Feedback (Chowdhury et al., 2024)",
            module="workbench.lightning_modules.preference:RobustDPOModule",
            terms=_PREFERENCE_TERMS,
            params=RobustDPOParams,
            row_kind="preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="rpo",
            family="preference",
            summary="RPO: DPO plus the chosen completion's per-token NLL.",
            formula="L = -log sig(beta h) - alpha log pi(y_w|x) / |y_w|",
            paper="Iterative Reasoning Preference Optimization (Pang et al., 2024)",
            module="workbench.lightning_modules.preference:RPOModule",
            terms=_PREFERENCE_TERMS,
            params=RPOParams,
            row_kind="preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="simpo",
            family="preference",
            summary="SimPO: length-normalised likelihood reward with a target margin; no reference.",
            formula="L = -log sig(beta log pi(y_w|x)/|y_w| - beta log pi(y_l|x)/|y_l| - gamma)",
            paper="SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng et al., 2024)",
            module="workbench.lightning_modules.preference:SimPOModule",
            terms=_PREFERENCE_TERMS,
            params=SimPOParams,
            row_kind="preference",
            reference="none",
            builtin=True,
        ),
        MethodInfo(
            name="orpo",
            family="preference",
            summary="ORPO: NLL plus an odds-ratio term; no reference, no SFT stage.",
            formula="L = -log pi(y_w|x)/|y_w| - beta log sig(log odds(y_w) - log odds(y_l)), odds = P/(1-P), P = pi^(1/|y|)",
            paper="ORPO: Monolithic Preference Optimization without Reference Model (Hong et al., 2024)",
            module="workbench.lightning_modules.preference:ORPOModule",
            terms=_PREFERENCE_TERMS,
            params=ORPOParams,
            row_kind="preference",
            reference="none",
            builtin=True,
        ),
        MethodInfo(
            name="tpo",
            family="preference",
            summary="TPO: a reference-free preference term plus the NLL of the gold (chosen) completion, one stage.",
            formula="L = -log sig(beta (log pi(y_w|x) - log pi(y_l|x))) + alpha NLL(y_gold|x)",
            paper="Triple Preference Optimization: Achieving Better Alignment using a Single Step Optimization (Saeidi et al., 2024)",
            module="workbench.lightning_modules.preference:TPOModule",
            terms=_PREFERENCE_TERMS,
            params=TPOParams,
            row_kind="preference",
            reference="none",
            builtin=True,
        ),
        MethodInfo(
            name="asft",
            family="preference",
            summary="ASFT: SFT plus an absolute-likelihood term on each completion; no reference.",
            formula="L = -log pi(y_w|x)/|y_w| + beta (-log P(y_w|x) - log(1 - P(y_l|x))), P = pi^(1/|y|)",
            paper="ASFT: Aligned Supervised Fine-Tuning through Absolute Likelihood (Wang et al., 2024)",
            module="workbench.lightning_modules.preference:ASFTModule",
            terms=_PREFERENCE_TERMS,
            params=ASFTParams,
            row_kind="preference",
            reference="none",
            builtin=True,
        ),
        MethodInfo(
            name="modpo",
            family="multi-objective",
            summary="MODPO: DPO on the objective with term 'preference' (weight w_0), with a margin from "
                    "the scores of the objectives with term 'score_margin' (weights w_k).",
            formula="L = -log sig((beta h - sum_k w_k (s_k(y_w) - s_k(y_l))) / w_0)",
            paper="Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference Optimization "
                  "(Zhou et al., 2024)",
            module="workbench.lightning_modules.preference:MODPOModule",
            terms=(*_PREFERENCE_TERMS, "score_margin"),
            params=MODPOParams,
            row_kind="scored_preference",
            reference="precomputed",
            builtin=True,
        ),
        MethodInfo(
            name="kto",
            family="preference",
            summary="KTO on completions labelled desirable or not (each pair gives one of each).",
            formula="L = lD (1 - sig(beta (rho - z))) | lU (1 - sig(beta (z - rho))), z = max(0, KL estimate)",
            paper="KTO: Model Alignment as Prospect Theoretic Optimization (Ethayarajh et al., 2024)",
            module="workbench.lightning_modules.preference:KTOModule",
            terms=_PREFERENCE_TERMS,
            params=KTOParams,
            row_kind="unpaired",
            reference="adapter_disabled",
            builtin=True,
        ),
        MethodInfo(
            name="grpo",
            family="reinforcement",
            summary="GRPO: sample a group of completions per prompt, score them with the reward "
                    "objectives, push up those above their group's mean (no value model).",
            formula="L = -mean_i agg_t min(r_it A_i, clip(r_it, 1-eps_lo, 1+eps_hi) A_i) + beta KL, "
                    "A_i = (T_i - mean_group T) / std_group T, T_i = sum_k w_k reward_k(y_i)",
            paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models "
                  "(Shao et al., 2024)",
            module="workbench.lightning_modules.grpo:GRPOModule",
            terms=("policy", "reward"),
            params=GRPOParams,
            row_kind="prompt",
            # Only with beta > 0 (GRPOParams.reference_need); a full fine-tune keeps a frozen copy.
            reference="adapter_disabled",
            builtin=True,
        ),
        MethodInfo(
            name="raft",
            family="reinforcement",
            summary="RAFT: sample K completions per prompt, keep the best by the weighted reward, "
                    "fine-tune on them; repeated every step.",
            formula="L = mean_{kept y} NLL(y | x), kept = argmax_{y in K samples of x} sum_k w_k reward_k(y)",
            paper="RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment "
                  "(Dong et al., 2023)",
            module="workbench.lightning_modules.raft:RAFTModule",
            terms=("completion", "reward"),
            params=RAFTParams,
            row_kind="prompt",
            builtin=True,
        ),
    ]
}

ADAPTERS: dict[str, AdapterInfo] = {
    a.name: a
    for a in [
        AdapterInfo("full", "Every parameter of the base model trains.", FullAdapterParams,
                    "workbench.adapters:apply_full"),
        AdapterInfo(
            "lora",
            "Low-rank adapters (peft) on the attention and MLP projections; the base is frozen.",
            LoraAdapterParams,
            "workbench.adapters:apply_lora",
            "LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021)",
        ),
    ]
}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    o.name: o
    for o in [
        OptimizerInfo("adamw", "torch.optim.AdamW (decoupled weight decay).", "workbench.optimizers:build_adamw"),
        OptimizerInfo("adam", "torch.optim.Adam.", "workbench.optimizers:build_adam"),
        OptimizerInfo("sgd", "torch.optim.SGD with momentum.", "workbench.optimizers:build_sgd"),
    ]
}

SCHEDULERS: dict[str, SchedulerInfo] = {
    s.name: s
    for s in [
        SchedulerInfo("constant", "the peak rate throughout (after warm-up)", "workbench.schedules:constant"),
        SchedulerInfo("linear", "linear decay to 0 at the last step", "workbench.schedules:linear"),
        SchedulerInfo("cosine", "half a cosine from the peak to 0", "workbench.schedules:cosine"),
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
    ``workbench.lightning_modules.base.WorkbenchModule``, or ``"package.module:Class"``);
    ``params`` a :class:`MethodParams` subclass with the method's parameters (each field
    documented with ``Field(description=...)``); ``terms`` the loss terms its
    ``compute_losses`` returns (a mapping adds new terms with their one-line summaries);
    ``reference`` one of :data:`REFERENCE_KINDS`. Registering a name again replaces a user
    method (re-running a cell); built-in methods cannot be replaced.
    """
    _check_new_name(name, METHODS, "method")
    if row_kind not in ROW_KINDS:
        raise ValueError(f"unknown row kind '{row_kind}'; allowed: {choices(ROW_KINDS)}")
    if reference not in REFERENCE_KINDS:
        raise ValueError(f"unknown reference need '{reference}'; allowed: {choices(REFERENCE_KINDS)}")
    if params is None:
        params = MethodParams
    if not (isinstance(params, type) and issubclass(params, MethodParams)):
        raise TypeError("params must be a subclass of workbench.registry.MethodParams")
    summaries = dict(terms) if isinstance(terms, Mapping) else {t: "" for t in terms}
    if not summaries:
        raise ValueError(f"method '{name}' needs at least one loss term")
    for term, text in summaries.items():
        if term not in TERMS:
            TERMS[term] = TermInfo(term, text or f"loss term of method '{name}'")
    info = MethodInfo(name=name, family=family, summary=summary or f"user method '{name}'",
                      formula=formula, paper=paper, module=module, terms=tuple(summaries),
                      params=params, row_kind=row_kind, reference=reference)
    METHODS[name] = info
    return info


def _check_new_name(name: str, table: Mapping[str, Any], what: str) -> None:
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"a {what} name must be a non-empty string without ':', got {name!r}")
    existing = table.get(name)
    if existing is not None and getattr(existing, "builtin", False):
        raise ValueError(f"'{name}' is a built-in {what}; register yours under another name")


__all__ = [
    "ADAPTERS",
    "ASFTParams",
    "AdapterInfo",
    "AdapterParams",
    "ConditionedSFTParams",
    "DPOParams",
    "FullAdapterParams",
    "GRPOParams",
    "HingeParams",
    "IPOParams",
    "KERNEL_CHOICES",
    "KTOParams",
    "LoraAdapterParams",
    "METHODS",
    "MGDASFTParams",
    "MODPOParams",
    "MethodInfo",
    "MethodParams",
    "MultiObjectiveSFTParams",
    "OPTIMIZERS",
    "ORPOParams",
    "OptimizerInfo",
    "PluginParams",
    "RAFTParams",
    "REFERENCE_KINDS",
    "ROW_KINDS",
    "RPOParams",
    "Ref",
    "RobustDPOParams",
    "RowKind",
    "SCHEDULERS",
    "SchedulerInfo",
    "SimPOParams",
    "TERMS",
    "TPOParams",
    "TermInfo",
    "choices",
    "load_module_class",
    "ref_module",
    "register_method",
    "resolve",
]
