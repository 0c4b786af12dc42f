"""The supervised family's methods: plain SFT and multi-objective SFT (MORepair-style)."""

from __future__ import annotations

from workbench.methods.sft.params import MultiObjectiveSFTParams, SFTParams
from workbench.spec.entries import MethodInfo

# Terms of multi-objective SFT (and of its variants that build fronts in other ways).
MO_SFT_TERMS = ("answer", "explanation", "brevity", "completion")

METHODS: list[MethodInfo] = [
    MethodInfo(
        name="sft",
        family="supervised",
        summary="Supervised fine-tuning on the completion tokens.",
        formula="L = mean_i mean_{t in completion_i} -log p(y_t | y_<t, x_i); with "
        "task_balance, L = mean over a mixture's tasks of each task's mean loss",
        paper="(standard maximum-likelihood fine-tuning); task balance: MFTCoder: Boosting "
        "Code LLMs with Multitask Fine-Tuning (Liu et al., 2023)",
        module="workbench.methods.sft.module:SFTModule",
        terms=("completion",),
        params=SFTParams,
        builtin=True,
    ),
    MethodInfo(
        name="mo-sft",
        family="multi-objective",
        summary="Multi-objective SFT: loss terms scalarised by the objectives' training weights.",
        formula="L = sum_k w_k * L_k / sum_k w_k, L_k in {answer, explanation, brevity, "
        "completion}",
        paper="MORepair: Teaching LLMs to Repair Code via Multi-Objective Fine-tuning (Yang et "
        "al., 2024)",
        module="workbench.methods.sft.module:MultiObjectiveSFTModule",
        terms=MO_SFT_TERMS,
        params=MultiObjectiveSFTParams,
        builtin=True,
    ),
]
