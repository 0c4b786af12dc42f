"""The multi-objective family's SFT variants that build a front in a new way:
weight-conditioned training and gradient combination (MO-SFT itself is in the supervised
family's folder, MODPO in the preference family's). Both have modules of their own: they do
more than call a loss (draw weights into the prompt; combine the terms' gradients).
"""

from __future__ import annotations

from workbench.methods.multi_objective.params import ConditionedSFTParams, MGDASFTParams
from workbench.methods.sft.entries import MO_SFT_TERMS
from workbench.spec.entries import MethodInfo

METHODS: list[MethodInfo] = [
    MethodInfo(
        name="conditioned-sft",
        family="multi-objective",
        summary="Weight-conditioned SFT: each example draws its training weights (Dirichlet) and "
        "sees them in its prompt; one model answers for any weights.",
        formula="L_i = sum_k w_ik L_ik, w_i ~ Dirichlet(alpha), prompt_i = '<w answer 30 brevity "
        "70>' + x_i",
        paper="Rewards-in-Context: Multi-objective Alignment of Foundation Models with Dynamic "
        "Preference Adjustment (Yang et al., 2024)",
        module="workbench.methods.multi_objective.conditioned:ConditionedSFTModule",
        terms=MO_SFT_TERMS,
        params=ConditionedSFTParams,
        builtin=True,
    ),
    MethodInfo(
        name="mgda-sft",
        family="multi-objective",
        summary="MGDA in a preference region: the min-norm combination of the terms' gradients, "
        "kept in the region of the objectives' weights (PMTL).",
        formula="d = argmin_{d in hull(grad L_k, grad G_j active)} |d|, G_j = (u_j - u)^T L, u ~ "
        "1/w",
        paper="Pareto Multi-Task Learning (Lin et al., 2019); Multi-Task Learning as "
        "Multi-Objective Optimization (Sener & Koltun, 2018)",
        module="workbench.methods.multi_objective.mgda:MGDASFTModule",
        terms=MO_SFT_TERMS,
        params=MGDASFTParams,
        builtin=True,
    ),
]
