"""The RL family's methods: they sample completions during training and score them with
the spec's reward objectives, so each has a module of its own (sampling is more than a loss).
"""

from __future__ import annotations

from workbench.methods.rl.params import GRPOParams, RAFTParams
from workbench.spec.entries import MethodInfo

METHODS: list[MethodInfo] = [
    MethodInfo(
        name="grpo",
        family="reinforcement",
        summary="GRPO: sample a group of completions per prompt, score them with the reward "
        "objectives, push up those above their group's mean (no value model).",
        formula="L = -mean_i agg_t min(r_it A_i, clip(r_it, 1-eps_lo, 1+eps_hi) A_i) + beta KL, "
        "A_i = (T_i - mean_group T) / std_group T, T_i = sum_k w_k reward_k(y_i)",
        paper="DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models "
        "(Shao et al., 2024)",
        module="workbench.methods.rl.grpo:GRPOModule",
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
        formula="L = mean_{kept y} NLL(y | x), kept = argmax_{y in K samples of x} sum_k w_k "
        "reward_k(y)",
        paper="RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment "
        "(Dong et al., 2023)",
        module="workbench.methods.rl.raft:RAFTModule",
        terms=("completion", "reward"),
        params=RAFTParams,
        row_kind="prompt",
        builtin=True,
    ),
]
