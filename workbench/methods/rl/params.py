"""Parameters of the methods that learn from completions sampled during training (GRPO, RAFT).

Both methods train on the spec's reward objectives: every objective whose source is
``reward:<name>`` scores each sampled completion; its ``weight`` is that reward's training
(preference) weight and direction ``min`` negates it. The checks here run at spec
validation, so a GRPO spec without a reward fails before anything loads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workbench.spec.entries import MethodParams


class SampledCompletionParams(MethodParams):
    """How completions are sampled and scored each step (GRPO and RAFT alike)."""

    group_size: int = Field(
        8,
        ge=1,
        le=1024,
        description="Completions sampled per prompt each time the method samples (GRPO's G, "
        "RAFT's K); train.batch_size counts prompts, so a micro-batch trains "
        "batch_size * group_size completions.",
    )
    max_completion_length: int = Field(
        16,
        ge=1,
        le=65536,
        description="Budget of new tokens per completion; a completion that has not ended by "
        "then is cut there (and trained on as cut).",
    )
    min_completion_length: int = Field(
        0,
        ge=0,
        le=65536,
        description="Completions are at least this many new tokens: the end token cannot come "
        "earlier (0: off). Equal to max_completion_length, every completion has the "
        "same length, as a like-for-like speed comparison needs.",
    )
    temperature: float = Field(1.0, gt=0, le=100, description="Sampling temperature.")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Nucleus sampling: keep the smallest set of "
        "tokens whose probability reaches top_p (1: off).",
    )
    top_k: int = Field(0, ge=0, description="Sample among the k likeliest tokens only (0: off).")
    samples_every: int = Field(
        25,
        ge=1,
        description="Log the sampled completions (prompt, completion, each reward, the weighted "
        "total and what the method made of it) as an MLflow table every N steps.",
    )

    @model_validator(mode="after")
    def _lengths_fit(self):
        if self.min_completion_length > self.max_completion_length:
            raise ValueError(
                f"min_completion_length = {self.min_completion_length} is above "
                f"max_completion_length = {self.max_completion_length}; "
                "lower it or raise the maximum"
            )
        return self

    def check_objectives(self, objectives) -> None:
        rewards = [o for o in objectives if o.kind == "reward"]
        if not rewards:
            sources = ", ".join(f"{o.name}: {o.source}" for o in objectives) or "none"
            raise ValueError(
                f"objectives: method '{self.name}' trains on rewards, and no objective has a "
                f"reward: source (the spec's objectives: {sources}); "
                "add one, e.g. {name: correct, "
                "direction: max, source: 'reward:<name>', weight: 1} (register rewards with "
                "workbench.register_reward)"
            )
        names = [o.source for o in rewards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"objectives: {repeated} appear in more than one objective; give each "
                "reward one objective (its weight is that reward's training weight)"
            )
        if sum(o.weight for o in rewards) <= 0:
            raise ValueError(
                f"objectives: every reward objective has weight 0, so method "
                f"'{self.name}' has nothing to train on; give one a weight > 0"
            )


class GRPOParams(SampledCompletionParams):
    """GRPO: group-relative advantages, PPO's clipped surrogate, optional KL to a reference."""

    group_size: int = Field(
        8,
        ge=2,
        le=1024,
        description="G, completions sampled per prompt; each is judged against the others of its "
        "group, so at least 2 (train.batch_size counts prompts).",
    )
    beta: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Weight of the KL penalty to the reference model (k3 estimator per token); "
        "0: no penalty and no reference model is kept.",
    )
    epsilon_low: float = Field(
        0.2, ge=0, lt=1, description="Clip the importance ratio below at 1 - epsilon_low."
    )
    epsilon_high: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Clip the ratio above at 1 + epsilon_high (None: epsilon_low; DAPO's "
        "clip-higher sets it larger, e.g. 0.28).",
    )
    num_iterations: int = Field(
        1,
        ge=1,
        le=64,
        description="Optimizer steps per batch of samples (PPO's mu): the completions, their "
        "advantages and the policy's log-probs at sampling time are kept and trained "
        "on for this many steps, so from the second step on the importance ratio "
        "departs from 1 and clipping can bind.",
    )
    aggregation: Literal["sequence", "token", "dr_grpo"] = Field(
        "sequence",
        description="How token losses become the batch loss: 'sequence' (GRPO: mean over each "
        "completion, then over completions), "
        "'token' (DAPO: mean over every completion token of the optimizer step, "
        "all micro-batches and ranks), "
        "'dr_grpo' (Dr. GRPO: sum over tokens / (completions * max_completion_length)).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide the centred reward by its std over the group (GRPO), over the batch, "
        "or not at all (Dr. GRPO).",
    )
    reward_combine: Literal["sum_then_normalize", "normalize_then_sum"] = Field(
        "sum_then_normalize",
        description="Weight the rewards then centre and scale the total, or centre and scale each "
        "reward in its group first and weight those (a reward's units cannot then "
        "swamp the others).",
    )

    def reference_need(self, declared: str) -> str:
        # Without the KL penalty nothing reads the reference: keep no copy in memory.
        return "none" if self.beta == 0 else declared


class RAFTParams(SampledCompletionParams):
    """RAFT: sample, rank by the weighted reward, fine-tune on the best."""

    group_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="K, completions sampled per prompt; the best of each prompt's K is kept "
        "(train.batch_size counts prompts).",
    )
    keep_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="None: keep the best completion of each prompt. A fraction: keep that share "
        "of the micro-batch's completions with the highest weighted reward, "
        "whichever prompts they answer (ranking over the whole batch).",
    )
    min_total: float | None = Field(
        None,
        description="Also drop kept completions whose weighted reward is below this (None: keep "
        "the best whatever it scored).",
    )
