"""The preference family's methods: one :class:`~workbench.spec.entries.MethodInfo` each.

Each is a pure loss of :mod:`workbench.methods.preference.losses` (named as a lazy string,
with the inputs it takes from the batch) and its parameters model; the row kind's generic
module (:class:`~workbench.methods.preference.module.PreferencePairModule` for pairs,
:class:`~workbench.methods.preference.module.UnpairedModule` for KTO's labelled rows) calls
it. MODPO has a module of its own: its margin comes from the objectives' weights.
"""

from __future__ import annotations

from workbench.methods.preference.params import (
    ASFTParams,
    DPOParams,
    HingeParams,
    IPOParams,
    KTOParams,
    MODPOParams,
    ORPOParams,
    RobustDPOParams,
    RPOParams,
    SimPOParams,
    TPOParams,
)
from workbench.spec.entries import MethodInfo

_LOSSES = "workbench.methods.preference.losses:"
_PAIR_MODULE = "workbench.methods.preference.module:PreferencePairModule"
# Terms every preference method returns: its loss, and two measures of its implicit reward.
_PREFERENCE_TERMS = ("preference", "reward_accuracy", "reward_margin")
# What the pair losses take from the batch (the row kind's loss inputs).
_POLICY = ("policy_chosen_logps", "policy_rejected_logps")
_WITH_REFERENCE = (*_POLICY, "ref_chosen_logps", "ref_rejected_logps")
_LENGTHS = ("chosen_lengths", "rejected_lengths")

METHODS: list[MethodInfo] = [
    MethodInfo(
        name="dpo",
        family="preference",
        summary="DPO on preference pairs (label_smoothing > 0: conservative DPO).",
        formula="L = -(1-eps) log sig(beta h) - eps log sig(-beta h), h = log-ratio(y_w) - "
        "log-ratio(y_l)",
        paper="Direct Preference Optimization: Your Language Model is Secretly a Reward Model "
        "(Rafailov et al., 2023)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=DPOParams,
        row_kind="preference",
        reference="precomputed",
        loss=_LOSSES + "dpo_loss",
        loss_inputs=_WITH_REFERENCE,
        builtin=True,
    ),
    MethodInfo(
        name="ipo",
        family="preference",
        summary="IPO: a squared loss that keeps the log-ratio gap at 1/(2 beta).",
        formula="L = (h - 1/(2 beta))^2",
        paper="A General Theoretical Paradigm to Understand Learning from Human Preferences (Azar "
        "et al., 2023)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=IPOParams,
        row_kind="preference",
        reference="precomputed",
        loss=_LOSSES + "ipo_loss",
        loss_inputs=(*_WITH_REFERENCE, *_LENGTHS),
        builtin=True,
    ),
    MethodInfo(
        name="hinge",
        family="preference",
        summary="Hinge loss on the DPO log-ratios (SLiC-style).",
        formula="L = max(0, 1 - beta h)",
        paper="SLiC-HF: Sequence Likelihood Calibration with Human Feedback (Zhao et al., 2023)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=HingeParams,
        row_kind="preference",
        reference="precomputed",
        loss=_LOSSES + "hinge_loss",
        loss_inputs=_WITH_REFERENCE,
        builtin=True,
    ),
    MethodInfo(
        name="robust-dpo",
        family="preference",
        summary="Robust DPO: unbiased under labels flipped with probability eps.",
        formula="L = [-(1-eps) log sig(beta h) + eps log sig(-beta h)] / (1 - 2 eps)",
        paper="Provably Robust DPO: Aligning Language Models with Noisy Feedback (Chowdhury et "
        "al., 2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=RobustDPOParams,
        row_kind="preference",
        reference="precomputed",
        loss=_LOSSES + "robust_loss",
        loss_inputs=_WITH_REFERENCE,
        builtin=True,
    ),
    MethodInfo(
        name="rpo",
        family="preference",
        summary="RPO: DPO plus the chosen completion's per-token NLL.",
        formula="L = -log sig(beta h) - alpha log pi(y_w|x) / |y_w|",
        paper="Iterative Reasoning Preference Optimization (Pang et al., 2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=RPOParams,
        row_kind="preference",
        reference="precomputed",
        loss=_LOSSES + "rpo_loss",
        loss_inputs=(*_WITH_REFERENCE, "chosen_lengths"),
        builtin=True,
    ),
    MethodInfo(
        name="simpo",
        family="preference",
        summary="SimPO: length-normalised likelihood reward with a target margin; no reference.",
        formula="L = -log sig(beta log pi(y_w|x)/|y_w| - beta log pi(y_l|x)/|y_l| - gamma)",
        paper="SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng et al., "
        "2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=SimPOParams,
        row_kind="preference",
        reference="none",
        loss=_LOSSES + "simpo_loss",
        loss_inputs=(*_POLICY, *_LENGTHS),
        builtin=True,
    ),
    MethodInfo(
        name="orpo",
        family="preference",
        summary="ORPO: NLL plus an odds-ratio term; no reference, no SFT stage.",
        formula="L = -log pi(y_w|x)/|y_w| - beta log sig(log odds(y_w) - log odds(y_l)), odds = "
        "P/(1-P), P = pi^(1/|y|)",
        paper="ORPO: Monolithic Preference Optimization without Reference Model (Hong et al., "
        "2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=ORPOParams,
        row_kind="preference",
        reference="none",
        loss=_LOSSES + "orpo_loss",
        loss_inputs=(*_POLICY, *_LENGTHS),
        builtin=True,
    ),
    MethodInfo(
        name="tpo",
        family="preference",
        summary="TPO: a reference-free preference term plus the NLL of the gold (chosen) "
        "completion, one stage.",
        formula="L = -log sig(beta (log pi(y_w|x) - log pi(y_l|x))) + alpha NLL(y_gold|x)",
        paper="Triple Preference Optimization: Achieving Better Alignment using a Single Step "
        "Optimization (Saeidi et al., 2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=TPOParams,
        row_kind="preference",
        reference="none",
        loss=_LOSSES + "tpo_loss",
        loss_inputs=(*_POLICY, "gold_nll"),
        builtin=True,
    ),
    MethodInfo(
        name="asft",
        family="preference",
        summary="ASFT: SFT plus an absolute-likelihood term on each completion; no reference.",
        formula="L = -log pi(y_w|x)/|y_w| + beta (-log P(y_w|x) - log(1 - P(y_l|x))), P = "
        "pi^(1/|y|)",
        paper="ASFT: Aligned Supervised Fine-Tuning through Absolute Likelihood (Wang et al., "
        "2024)",
        module=_PAIR_MODULE,
        terms=_PREFERENCE_TERMS,
        params=ASFTParams,
        row_kind="preference",
        reference="none",
        loss=_LOSSES + "asft_loss",
        loss_inputs=(*_POLICY, *_LENGTHS),
        builtin=True,
    ),
    MethodInfo(
        name="modpo",
        family="multi-objective",
        summary="MODPO: DPO on the objective with term 'preference' (weight w_0), with a margin "
        "from "
        "the scores of the objectives with term 'score_margin' (weights w_k).",
        formula="L = -log sig((beta h - sum_k w_k (s_k(y_w) - s_k(y_l))) / w_0)",
        paper="Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference "
        "Optimization "
        "(Zhou et al., 2024)",
        module="workbench.methods.preference.module:MODPOModule",
        terms=(*_PREFERENCE_TERMS, "score_margin"),
        params=MODPOParams,
        row_kind="scored_preference",
        reference="precomputed",
        loss=_LOSSES + "modpo_loss",
        loss_inputs=_WITH_REFERENCE,
        builtin=True,
    ),
    MethodInfo(
        name="kto",
        family="preference",
        summary="KTO on completions labelled desirable or not (each pair gives one of each).",
        formula="L = lD (1 - sig(beta (rho - z))) | lU (1 - sig(beta (z - rho))), z = max(0, KL "
        "estimate)",
        paper="KTO: Model Alignment as Prospect Theoretic Optimization (Ethayarajh et al., 2024)",
        module="workbench.methods.preference.module:UnpairedModule",
        terms=_PREFERENCE_TERMS,
        params=KTOParams,
        row_kind="unpaired",
        reference="adapter_disabled",
        loss=_LOSSES + "kto_loss",
        loss_inputs=("policy_logps", "ref_logps", "desirable", "kl"),
        builtin=True,
    ),
]
