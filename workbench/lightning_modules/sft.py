"""Supervised fine-tuning: plain SFT and multi-objective SFT (MORepair-style)."""

from __future__ import annotations

from workbench import losses
from workbench.lightning_modules.base import WorkbenchModule


class SFTModule(WorkbenchModule):
    """L = mean over the batch of the completion NLL (losses.sft_loss)."""

    def compute_losses(self, batch):
        logits = self.logits(batch)
        per_example, _ = losses.sft_loss(logits, batch["labels"])
        return per_example, {"completion": per_example}


class MultiObjectiveSFTModule(WorkbenchModule):
    """Loss terms scalarised by the objectives' training weights (losses.scalarise).

    In the spirit of MORepair: separate NLL terms for the answer and explanation segments of
    a completion (plus a brevity term), combined with weights taken from the RunSpec's
    objectives, so a weight sweep traces a trade-off between them.
    """

    def __init__(self, spec, model, tokenizer, encoded):
        super().__init__(spec, model, tokenizer, encoded)
        self.term_weights: dict[str, float] = {}
        for objective in spec.objectives:
            if objective.term is not None:
                self.term_weights[objective.term] = self.term_weights.get(objective.term, 0.0) + objective.weight

    def compute_losses(self, batch):
        logits = self.logits(batch)
        labels, segments = batch["labels"], batch["segments"]
        terms = {}
        for name in self.term_weights:
            if name == "completion":
                terms[name], _ = losses.sft_loss(logits, labels)
            elif name == "brevity":
                terms[name] = losses.brevity_loss(logits, labels, self.eos_id)
            else:
                terms[name] = losses.segment_nll(logits, labels, segments, name)
        return losses.scalarise(terms, self.term_weights), terms
