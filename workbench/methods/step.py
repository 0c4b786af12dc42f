"""What one training micro-batch measured, returned by ``training_step`` beside its loss.

A module's ``training_step`` returns ``{"loss": loss, "step": StepOutput(...)}``, as a
Lightning ``training_step`` returns its loss: the run's events callback reads it from the
``outputs`` of ``on_train_batch_end`` and averages the micro-batches of one optimizer step
(and the ranks of a DDP run) into the step's metrics. Nothing is kept on the module between
micro-batches for someone else to collect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.spec.mlflow_names import LOSS_KEY, TOKENS_KEY, TRAIN_PREFIX


@dataclass
class StepOutput:
    """One micro-batch's measurements, as plain numbers (no tensors, no graph).

    ``loss`` is the micro-batch's mean loss; ``terms`` each loss term's mean over its rows;
    ``metrics`` what the method measured beyond its terms (``pref/margin``, ``reward/total``,
    ...); ``tokens`` the tokens it processed (for ``perf/tokens_per_s``); ``samples`` the
    completions a method sampled (GRPO, RAFT), one dict per completion.
    """

    loss: float
    terms: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: float = 0.0
    samples: list[dict] = field(default_factory=list)

    def values(self) -> dict[str, float]:
        """The micro-batch's numbers under their MLflow names (``train/loss``, ``train/<term>``,
        the method's metrics) and ``perf/tokens``, the keys a step's mean is taken over."""
        values = {LOSS_KEY: self.loss}
        values.update({f"{TRAIN_PREFIX}{name}": value for name, value in self.terms.items()})
        values[TOKENS_KEY] = self.tokens
        values.update(self.metrics)
        return values
