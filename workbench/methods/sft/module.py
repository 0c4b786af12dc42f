"""Supervised fine-tuning: plain SFT and multi-objective SFT (MORepair-style)."""

from __future__ import annotations

import torch

from workbench.methods.base import WorkbenchModule
from workbench.methods.sft import losses as sft_losses


class SFTModule(WorkbenchModule):
    """L = mean over the batch of the completion NLL (sft_losses.masked_mean_nll); with
    ``task_balance`` each task of a mixture counts equally (sft_losses.task_balanced_nll).
    The ``completion`` term stays each row's own mean NLL."""

    def compute_losses(self, batch):
        logp, mask, _ = self.token_stats(batch)
        per_example = sft_losses.masked_mean_nll(logp, mask)
        balance = self.params.task_balance
        if balance == "none":
            return per_example, {"completion": per_example}
        balanced = sft_losses.task_balanced_nll(logp, mask, batch["task_groups"], balance)
        return balanced, {"completion": per_example}


class MultiObjectiveSFTModule(WorkbenchModule):
    """Loss terms scalarised by the objectives' training weights (sft_losses.scalarise).

    In the spirit of MORepair: separate NLL terms for the answer and explanation segments of
    a completion (plus a brevity term), combined with weights taken from the RunSpec's
    objectives, so a weight sweep traces a trade-off between them. Terms that ``term:``
    objectives measure but no weight trains are computed too (for the held-out values).
    """

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.term_weights: dict[str, float] = {}
        for objective in spec.objectives:
            if objective.term is not None:
                self.term_weights[objective.term] = (
                    self.term_weights.get(objective.term, 0.0) + objective.weight
                )

    def compute_terms(self, batch) -> dict[str, torch.Tensor]:
        """Every term this run weights or measures, per example (the weighted ones first)."""
        needed = self.terms_needed()
        logp, mask, eos_logp = self.token_stats(batch, need_eos="brevity" in needed)
        return {
            name: _TERMS[name](self, logp, mask, eos_logp, batch)
            for name in [*self.term_weights, *sorted(needed - set(self.term_weights))]
        }

    def compute_losses(self, batch):
        terms = self.compute_terms(batch)
        return sft_losses.scalarise(
            {k: terms[k] for k in self.term_weights}, self.term_weights
        ), terms


def _segment_term(segment: str):
    def term(module, logp, mask, eos_logp, batch):
        return sft_losses.masked_mean_nll(
            logp, sft_losses.segment_mask(mask, batch["segments"], segment)
        )

    return term


# Each term of MO-SFT from the batch's token log-probs (registry.TERMS describes them).
_TERMS = {
    "completion": lambda module, logp, mask, eos_logp, batch: sft_losses.masked_mean_nll(
        logp, mask
    ),
    "brevity": lambda module, logp, mask, eos_logp, batch: sft_losses.brevity_from_eos_logprobs(
        eos_logp, mask, module.params.brevity_position_scale
    ),
    "answer": _segment_term("answer"),
    "explanation": _segment_term("explanation"),
}
