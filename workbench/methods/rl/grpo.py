"""GRPO: group-relative policy optimisation over weighted reward objectives.

Each step samples ``group_size`` completions per prompt and scores them with every reward
objective (:mod:`.sampling`); ``rl_losses.group_advantages`` turns the (N, R) rewards and the
objectives' weights into one advantage per completion, relative to its group; and
``rl_losses.grpo_loss`` is the clipped surrogate on the completions' per-token log-probs, with
the KL penalty to the reference when ``beta > 0``. The policy's log-probs at sampling time
(the "old" policy) are the first step's own, detached, so the ratio is exactly 1 there; with
``num_iterations`` > 1 the samples are trained on for that many optimizer steps, and the
ratio then measures how far the policy moved since it sampled them.
"""

from __future__ import annotations

from workbench.methods.rl import losses as rl_losses
from workbench.methods.rl.sampling import SampledCompletions, SampledCompletionsModule
from workbench.spec.mlflow_names import GRPO_PREFIX


class GRPOModule(SampledCompletionsModule):
    metrics_prefix = "grpo"

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        # The ratio and the KL compare log-probs of the distribution the completions were
        # sampled from: softmax(logits / temperature), as TRL's GRPOTrainer takes them.
        self.logit_temperature = self.params.temperature

    def sample_reuse(self) -> int:
        return self.params.num_iterations

    def counts_step_tokens(self) -> bool:
        # DAPO divides by every completion token of the optimizer step, all micro-batches and ranks.
        return self.params.aggregation in rl_losses.STEP_TOKEN_AGGREGATIONS

    def token_normaliser(self, samples: SampledCompletions):
        """``grpo_loss``'s ``num_tokens`` for one micro-batch: the step's tokens over the
        micro-batches and ranks whose losses are averaged (the trainer divides each
        micro-batch's loss by grad_accum, DDP averages over ranks), so the step's gradient is
        that of sum(token losses) / step tokens."""
        if "step_tokens" not in samples.values:
            return None  # held-out terms: their own batch
        return float(samples.values["step_tokens"]) / (
            self.spec.train.grad_accum * self._world_size()
        )

    def on_samples_drawn(self, samples: SampledCompletions) -> None:
        p = self.params
        advantages, _ = rl_losses.group_advantages(
            samples.signed.to(self.device),
            self.reward_weights.to(self.device),
            p.group_size,
            scale=p.scale_rewards,
            combine=p.reward_combine,
        )
        samples.values["advantages"] = advantages
        # The reference does not move: its log-probs are taken once per batch of samples
        # (none without the KL penalty: GRPOParams.reference_need keeps no reference then).
        reference = self.reference.token_logps(self, samples.batch)
        if reference is not None:
            samples.values["ref_logps"] = reference[0]

    def loss_on_samples(self, samples: SampledCompletions):
        p = self.params
        logp, mask = self.completion_logprobs(samples.batch)
        if "old_logps" not in samples.values:
            samples.values["old_logps"] = logp.detach()  # the policy that sampled them, this step
        per_completion, metrics = rl_losses.grpo_loss(
            policy_logps=logp,
            old_logps=samples.values["old_logps"],
            advantages=samples.values["advantages"],
            completion_mask=mask,
            ref_logps=samples.values.get("ref_logps"),
            beta=p.beta,
            epsilon_low=p.epsilon_low,
            epsilon_high=p.epsilon_high,
            aggregation=p.aggregation,
            max_completion_length=p.max_completion_length,
            num_tokens=self.token_normaliser(samples),
        )
        self.log_step_metrics(
            {
                f"{GRPO_PREFIX}{name}": metrics[name]
                for name in ("clip_ratio", "ratio", "kl")
                if name in metrics
            }
        )
        return per_completion, {
            "policy": per_completion,
            "reward": samples.totals.to(per_completion.device),
        }

    def sample_columns(self, samples: SampledCompletions) -> dict[str, list]:
        return {"advantage": samples.values["advantages"].tolist()}
