"""Preference optimisation: the DPO family, its reference-free relatives, KTO and MODPO.

A preference batch holds the n chosen completions, then the n rejected ones
(``collate_pairs``), so one forward pass scores both. :class:`PairwiseModule` turns that
pass (and the reference's log-probs, from whichever reference the method declared in the
registry) into a :class:`PairScores`; each method is a small subclass whose ``pair_loss``
calls its function in :mod:`workbench.losses`. Every step logs the ``pref/*`` metrics
people debug preference training with, including likelihood displacement: the chosen
completion's log-prob falling below the reference's while the pair is ranked right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.data.encode import IGNORE_INDEX, Encoded, collate
from workbench.methods.base import WorkbenchModule
from workbench.methods.preference import losses as preference_losses
from workbench.methods.sft import losses as sft_losses
from workbench.spec.errors import DataError, SpecError


@dataclass
class PairScores:
    """What a pair loss reads: summed completion log-probs (n,), lengths (n,), and the
    chosen rows' token log-probs for losses with an NLL term."""

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None
    ref_rejected_logps: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    # Per-attribute score of chosen minus rejected (n,), from a scored batch's ``score/<name>``.
    score_margins: dict[str, torch.Tensor] = field(default_factory=dict)

    def with_reference(self) -> dict[str, torch.Tensor]:
        if self.ref_chosen_logps is None:
            raise RuntimeError(
                "this loss needs the reference model's log-probs; the method declared none"
            )
        return {
            "policy_chosen_logps": self.policy_chosen_logps,
            "policy_rejected_logps": self.policy_rejected_logps,
            "ref_chosen_logps": self.ref_chosen_logps,
            "ref_rejected_logps": self.ref_rejected_logps,
        }

    def policy_only(self, lengths: bool = True) -> dict[str, torch.Tensor]:
        out = {
            "policy_chosen_logps": self.policy_chosen_logps,
            "policy_rejected_logps": self.policy_rejected_logps,
        }
        if lengths:
            out.update(chosen_lengths=self.chosen_lengths, rejected_lengths=self.rejected_lengths)
        return out


class PairwiseModule(WorkbenchModule):
    """Chosen and rejected in one forward; a subclass maps :class:`PairScores` to its loss."""

    def pair_loss(self, scores: PairScores) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def pair_scores(self, batch) -> PairScores:
        n = int(batch["n_pairs"])
        logp, mask, _ = self.token_stats(batch)
        logps = sft_losses.sequence_logps(logp, mask)
        lengths = mask.sum(dim=1)
        ref = self.reference_logps(batch).to(logps.dtype) if self.reference_kind != "none" else None
        score_margins = {
            key.partition("/")[2]: (value[:, 0] - value[:, 1]).to(logps.dtype)
            for key, value in batch.items()
            if key.startswith("score/")
        }
        return PairScores(
            logps[:n],
            logps[n:],
            None if ref is None else ref[:n],
            None if ref is None else ref[n:],
            lengths[:n],
            lengths[n:],
            score_margins,
        )

    def compute_losses(self, batch):
        scores = self.pair_scores(batch)
        per_pair, metrics = self.pair_loss(scores)
        self.log_step_metrics(_pref_metrics(scores, metrics))
        terms = {
            "preference": per_pair,
            "reward_accuracy": metrics["accuracy"],
            "reward_margin": metrics["margin"],
        }
        if "score_margin" in metrics:
            terms["score_margin"] = metrics["score_margin"]
        return per_pair, terms


def _pref_metrics(scores: PairScores, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``pref/*`` metrics of one micro-batch (means over its pairs)."""
    out = {
        "pref/chosen_logps": scores.policy_chosen_logps.detach(),
        "pref/rejected_logps": scores.policy_rejected_logps.detach(),
        "pref/chosen_rewards": metrics["chosen_rewards"],
        "pref/rejected_rewards": metrics["rejected_rewards"],
        "pref/margin": metrics["margin"],
        "pref/accuracy": metrics["accuracy"],
    }
    if scores.ref_chosen_logps is not None:
        chosen_shift = (scores.policy_chosen_logps - scores.ref_chosen_logps).detach()
        # Likelihood displacement: the pair is ranked right, yet the chosen completion became
        # less likely than under the reference (the margin grew by pushing both down).
        out["pref/chosen_logratio"] = chosen_shift
        out["pref/displacement"] = ((chosen_shift < 0) & (metrics["margin"] > 0)).float()
    for name in ("nll", "log_odds_ratio", "align", "score_margin"):
        if name in metrics:
            out[f"pref/{name}"] = metrics[name]
    return out


class DPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.dpo_loss(
            **scores.with_reference(),
            beta=self.params.beta,
            label_smoothing=self.params.label_smoothing,
        )


class IPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.ipo_loss(
            **scores.with_reference(),
            beta=self.params.beta,
            length_normalize=self.params.length_normalize,
            chosen_lengths=scores.chosen_lengths,
            rejected_lengths=scores.rejected_lengths,
        )


class HingeModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.hinge_loss(**scores.with_reference(), beta=self.params.beta)


class RobustDPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.robust_loss(
            **scores.with_reference(),
            beta=self.params.beta,
            label_smoothing=self.params.label_smoothing,
        )


class RPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.rpo_loss(
            **scores.with_reference(),
            chosen_lengths=scores.chosen_lengths,
            beta=self.params.beta,
            alpha=self.params.alpha,
        )


class SimPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.simpo_loss(
            **scores.policy_only(),
            beta=self.params.beta,
            gamma=self.params.gamma,
            label_smoothing=self.params.label_smoothing,
        )


class ORPOModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.orpo_loss(**scores.policy_only(), beta=self.params.beta)


class TPOModule(PairwiseModule):
    """The gold completion is the chosen one (built-in pairs: the task's correct answer)."""

    def pair_loss(self, scores):
        gold_nll = -scores.policy_chosen_logps / scores.chosen_lengths.clamp(min=1)
        return preference_losses.tpo_loss(
            **scores.policy_only(lengths=False),
            gold_nll=gold_nll,
            beta=self.params.beta,
            alpha=self.params.alpha,
        )


class ASFTModule(PairwiseModule):
    def pair_loss(self, scores):
        return preference_losses.asft_loss(**scores.policy_only(), beta=self.params.beta)


class MODPOModule(PairwiseModule):
    """MODPO (``preference_losses.modpo_loss``) with the spec's training weights as the paper's w.

    The DPO term trains the objective whose ``term`` is ``preference`` (the pairs' labels;
    its weight is w_0). Each objective whose ``term`` is ``score_margin`` adds
    w_k (s_k(y_w) - s_k(y_l)) to the margin, s_k being the pair's score named like the
    objective, negated when the objective's direction is ``min`` (so higher is better).
    The policy's implicit reward then fits w_0 r_0 + sum_k w_k s_k: sweeping the weights
    moves the policy along the front of the objectives, with no RL.
    """

    def __init__(self, spec, model, tokenizer, encoded, kernel_usage=None):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage)
        self.preference_weight = sum(o.weight for o in spec.objectives if o.term == "preference")
        if self.preference_weight <= 0:
            raise SpecError(
                "objectives: MODPO trains one objective by preference: give an objective "
                "term 'preference' and a weight > 0 (the others take term 'score_margin')"
            )
        # (score name, sign, weight) of each objective that sets the margin.
        self.margins = [
            (o.name, 1.0 if o.direction == "max" else -1.0, o.weight)
            for o in spec.objectives
            if o.term == "score_margin"
        ]
        have = [name for name, _, _ in encoded[0].scores] if encoded else []
        missing = [name for name, _, _ in self.margins if name not in have]
        if missing:
            raise DataError(
                f"objectives {missing} set MODPO's margin, but the pairs have no score of "
                f"that name; their scores: {have or 'none'} (an objective's name picks its score)"
            )

    def pair_loss(self, scores):
        reference = scores.with_reference()
        n = scores.policy_chosen_logps.shape[0]
        if self.margins:
            margins = torch.stack(
                [sign * scores.score_margins[name] for name, sign, _ in self.margins], dim=-1
            )
        else:
            margins = scores.policy_chosen_logps.new_zeros(n, 0)
        return preference_losses.modpo_loss(
            **reference,
            score_margins=margins,
            weights=[w for _, _, w in self.margins],
            weight=self.preference_weight,
            beta=self.params.beta,
        )


class KTOModule(WorkbenchModule):
    """KTO on unpaired rows (``batch["desirable"]``). The KL reference point is estimated on
    the batch's mismatched pairs: prompt i with the completion of row i - 1."""

    def compute_losses(self, batch):
        logp, mask, _ = self.token_stats(batch)
        policy = sft_losses.sequence_logps(logp, mask)
        ref = self.reference_logps(batch).to(policy.dtype)
        mismatched = {k: v.to(self.device) for k, v in mismatched_batch(batch, self.pad_id).items()}
        with torch.no_grad():
            m_logp, m_mask, _ = self.token_stats(mismatched)
            kl = preference_losses.kto_kl_estimate(
                policy_mismatched_logps=sft_losses.sequence_logps(m_logp, m_mask),
                ref_mismatched_logps=self.reference_logps(mismatched).to(policy.dtype),
            )
        p = self.params
        per_row, metrics = preference_losses.kto_loss(
            policy_logps=policy,
            ref_logps=ref,
            desirable=batch["desirable"],
            kl=kl,
            beta=p.beta,
            desirable_weight=p.desirable_weight,
            undesirable_weight=p.undesirable_weight,
        )
        desirable = batch["desirable"].bool()
        # A row is ranked right when its reward sits on its label's side of the reference point.
        right = ((metrics["rewards"] > p.beta * metrics["kl"]) == desirable).float()
        margin = torch.where(desirable, metrics["rewards"], -metrics["rewards"])
        step = {"pref/accuracy": right, "pref/kl": kl, "pref/logps": policy.detach()}
        if desirable.any():
            step["pref/chosen_rewards"] = metrics["rewards"][desirable]
            step["pref/chosen_logps"] = policy.detach()[desirable]
        if (~desirable).any():
            step["pref/rejected_rewards"] = metrics["rewards"][~desirable]
            step["pref/rejected_logps"] = policy.detach()[~desirable]
        self.log_step_metrics(step)
        return per_row, {"preference": per_row, "reward_accuracy": right, "reward_margin": margin}


def mismatched_batch(batch, pad_id: int) -> dict[str, torch.Tensor]:
    """Each row's prompt followed by the completion of the row before it (cyclically)."""
    prompts, completions = [], []
    for ids, labels, attention in zip(
        batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
    ):
        length = sum(attention)
        start = next(t for t in range(length) if labels[t] != IGNORE_INDEX)
        prompts.append(ids[:start])
        completions.append(ids[start:length])
    rows = []
    for i, prompt in enumerate(prompts):
        completion = completions[i - 1]
        rows.append(
            Encoded(
                prompt + completion,
                [IGNORE_INDEX] * len(prompt) + completion,
                [0] * (len(prompt) + len(completion)),
                False,
            )
        )
    return collate(rows, pad_id)
