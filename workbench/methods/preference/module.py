"""Preference optimisation: the generic modules that train a preference loss named by a
method's entry, and MODPO's.

A preference batch holds the n chosen completions, then the n rejected ones
(``collate_pairs``), so one forward pass scores both. :class:`PreferencePairModule` turns
that pass (and the reference's log-probs, from the reference strategy the module was handed)
into a :class:`PairScores`, and calls the entry's loss (``MethodInfo.loss``) with the inputs
the entry declares (``MethodInfo.loss_inputs``) and the method's parameters: a new pairwise
loss is a function and an entry, no module. :class:`UnpairedModule` does the same for rows
labelled desirable or not (KTO). Every step logs the ``pref/*`` metrics people debug
preference training with, including likelihood displacement: the chosen completion's
log-prob falling below the reference's while the pair is ranked right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.data.encode import IGNORE_INDEX, Encoded, collate
from workbench.methods.base import WorkbenchModule
from workbench.methods.preference import losses as preference_losses
from workbench.methods.sft import losses as sft_losses
from workbench.spec import registry
from workbench.spec.errors import DataError, SpecError
from workbench.spec.mlflow_names import PREF_PREFIX


@dataclass
class PairScores:
    """What a pair loss reads: summed completion log-probs (n,) under the policy and the
    reference (None without one), completion lengths (n,), and the scored pairs' margins."""

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None
    ref_rejected_logps: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    # Per-attribute score of chosen minus rejected (n,), from a scored batch's ``score/<name>``.
    score_margins: dict[str, torch.Tensor] = field(default_factory=dict)

    def loss_inputs(self, names) -> dict[str, torch.Tensor]:
        """The loss's keyword arguments ``names`` (the entry's ``loss_inputs``; the row kind
        offers these, ``registry.ROW_KINDS["preference"].loss_inputs``)."""
        offered = {
            "policy_chosen_logps": self.policy_chosen_logps,
            "policy_rejected_logps": self.policy_rejected_logps,
            "ref_chosen_logps": self.ref_chosen_logps,
            "ref_rejected_logps": self.ref_rejected_logps,
            "chosen_lengths": self.chosen_lengths,
            "rejected_lengths": self.rejected_lengths,
            # The gold completion is the chosen one (built-in pairs: the task's correct answer).
            "gold_nll": -self.policy_chosen_logps / self.chosen_lengths.clamp(min=1),
        }
        missing = [name for name in names if offered.get(name) is None]
        if missing:
            raise RuntimeError(
                f"this loss takes {missing}, which come from the reference model; the run "
                "has none (declare the method's reference need)"
            )
        return {name: offered[name] for name in names}


class PreferencePairModule(WorkbenchModule):
    """Chosen and rejected in one forward; the entry's loss maps :class:`PairScores` to the
    per-pair loss: ``loss(**scores.loss_inputs(entry.loss_inputs), **params.loss_kwargs())``.
    """

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.loss = registry.resolve(self.info.loss)
        # The reference pass runs only for a loss that reads it.
        self.reads_reference = any(name.startswith("ref_") for name in self.info.loss_inputs)

    def loss_kwargs(self, scores: PairScores) -> dict:
        """Every keyword argument of the loss: the declared inputs, then the parameters."""
        return {**scores.loss_inputs(self.info.loss_inputs), **self.params.loss_kwargs()}

    def pair_loss(self, scores: PairScores) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(**self.loss_kwargs(scores))

    def pair_scores(self, batch) -> PairScores:
        n = int(batch["n_pairs"])
        logp, mask, _ = self.token_stats(batch)
        logps = sft_losses.sequence_logps(logp, mask)
        lengths = mask.sum(dim=1)
        ref = self.reference.sequence_logps(self, batch) if self.reads_reference else None
        ref = None if ref is None else ref.to(logps.dtype)
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
        f"{PREF_PREFIX}chosen_logps": scores.policy_chosen_logps.detach(),
        f"{PREF_PREFIX}rejected_logps": scores.policy_rejected_logps.detach(),
        f"{PREF_PREFIX}chosen_rewards": metrics["chosen_rewards"],
        f"{PREF_PREFIX}rejected_rewards": metrics["rejected_rewards"],
        f"{PREF_PREFIX}margin": metrics["margin"],
        f"{PREF_PREFIX}accuracy": metrics["accuracy"],
    }
    if scores.ref_chosen_logps is not None:
        chosen_shift = (scores.policy_chosen_logps - scores.ref_chosen_logps).detach()
        # Likelihood displacement: the pair is ranked right, yet the chosen completion became
        # less likely than under the reference (the margin grew by pushing both down).
        out[f"{PREF_PREFIX}chosen_logratio"] = chosen_shift
        out[f"{PREF_PREFIX}displacement"] = ((chosen_shift < 0) & (metrics["margin"] > 0)).float()
    for name in ("nll", "log_odds_ratio", "align", "score_margin"):
        if name in metrics:
            out[f"{PREF_PREFIX}{name}"] = metrics[name]
    return out


class MODPOModule(PreferencePairModule):
    """MODPO (``preference_losses.modpo_loss``) with the spec's training weights as the paper's w.

    A module of its own because its loss takes more than the pairs and the parameters: the
    objectives' training weights and the pairs' scores named like them.

    The DPO term trains the objective whose ``term`` is ``preference`` (the pairs' labels;
    its weight is w_0). Each objective whose ``term`` is ``score_margin`` adds
    w_k (s_k(y_w) - s_k(y_l)) to the margin, s_k being the pair's score named like the
    objective, negated when the objective's direction is ``min`` (so higher is better).
    The policy's implicit reward then fits w_0 r_0 + sum_k w_k s_k: sweeping the weights
    moves the policy along the front of the objectives, with no RL.
    """

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.preference_weight = sum(o.weight for o in spec.objectives if o.term == "preference")
        if self.preference_weight <= 0:
            raise SpecError(
                "objectives: MODPO trains one objective by preference: give an objective "
                "term 'preference' and a weight > 0 (the others take term 'score_margin')"
            )
        # (score name, sign, weight) of each objective that sets the margin.
        self.margins = [
            (o.name, float(o.sign), o.weight) for o in spec.objectives if o.term == "score_margin"
        ]
        have = [name for name, _, _ in encoded[0].scores] if encoded else []
        missing = [name for name, _, _ in self.margins if name not in have]
        if missing:
            raise DataError(
                f"objectives {missing} set MODPO's margin, but the pairs have no score of "
                f"that name; their scores: {have or 'none'} (an objective's name picks its score)"
            )

    def loss_kwargs(self, scores):
        n = scores.policy_chosen_logps.shape[0]
        if self.margins:
            margins = torch.stack(
                [sign * scores.score_margins[name] for name, sign, _ in self.margins], dim=-1
            )
        else:
            margins = scores.policy_chosen_logps.new_zeros(n, 0)
        return {
            **super().loss_kwargs(scores),
            "score_margins": margins,
            "weights": [w for _, _, w in self.margins],
            "weight": self.preference_weight,
        }


class UnpairedModule(WorkbenchModule):
    """A loss on unpaired rows labelled desirable or not (``batch["desirable"]``), named by the
    method's entry (KTO): ``loss(**inputs, **params.loss_kwargs())``.

    Its inputs (the entry's ``loss_inputs``, from ``registry.ROW_KINDS["unpaired"]``):
    ``policy_logps`` and ``ref_logps`` (B,), ``desirable`` (B,), and ``kl``, the batch's KL
    reference point estimated on its mismatched pairs (prompt i with the completion of row
    i - 1, :func:`~workbench.methods.preference.losses.kto_kl_estimate`). The loss's metrics
    hold per row its ``rewards``, whether it is ranked right (``accuracy``) and its reward on
    its label's side (``margin``).
    """

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.loss = registry.resolve(self.info.loss)

    def loss_inputs(self, batch) -> dict[str, torch.Tensor]:
        """The entry's declared inputs of ``batch`` (the reference passes run only for those
        that read it)."""
        names = self.info.loss_inputs
        logp, mask, _ = self.token_stats(batch)
        policy = sft_losses.sequence_logps(logp, mask)
        inputs = {"policy_logps": policy, "desirable": batch["desirable"]}
        if "ref_logps" in names:
            inputs["ref_logps"] = self._reference_logps(batch).to(policy.dtype)
        if "kl" in names:
            inputs["kl"] = self.kl_estimate(batch, policy.dtype)
        return {name: inputs[name] for name in names}

    def _reference_logps(self, batch) -> torch.Tensor:
        ref = self.reference.sequence_logps(self, batch)
        if ref is None:
            raise RuntimeError(
                f"method '{self.info.name}' takes the reference's log-probs and the run has "
                "no reference model (declare the method's reference need)"
            )
        return ref

    @torch.no_grad()
    def kl_estimate(self, batch, dtype) -> torch.Tensor:
        """KTO's reference point on the batch's mismatched pairs (a scalar, no gradient)."""
        mismatched = {k: v.to(self.device) for k, v in mismatched_batch(batch, self.pad_id).items()}
        m_logp, m_mask, _ = self.token_stats(mismatched)
        return preference_losses.kto_kl_estimate(
            policy_mismatched_logps=sft_losses.sequence_logps(m_logp, m_mask),
            ref_mismatched_logps=self._reference_logps(mismatched).to(dtype),
        )

    def compute_losses(self, batch):
        inputs = self.loss_inputs(batch)
        per_row, metrics = self.loss(**inputs, **self.params.loss_kwargs())
        policy = inputs["policy_logps"].detach()
        desirable = batch["desirable"].bool()
        step = {f"{PREF_PREFIX}accuracy": metrics["accuracy"], f"{PREF_PREFIX}logps": policy}
        if "kl" in inputs:
            step[f"{PREF_PREFIX}kl"] = inputs["kl"]
        if desirable.any():
            step[f"{PREF_PREFIX}chosen_rewards"] = metrics["rewards"][desirable]
            step[f"{PREF_PREFIX}chosen_logps"] = policy[desirable]
        if (~desirable).any():
            step[f"{PREF_PREFIX}rejected_rewards"] = metrics["rewards"][~desirable]
            step[f"{PREF_PREFIX}rejected_logps"] = policy[~desirable]
        self.log_step_metrics(step)
        terms = {
            "preference": per_row,
            "reward_accuracy": metrics["accuracy"],
            "reward_margin": metrics["margin"],
        }
        return per_row, terms


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
