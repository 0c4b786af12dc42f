"""Preference losses: the DPO family, its reference-free relatives, KTO and MODPO.

Every function takes tensors by keyword and returns ``(per_example_loss, metrics)``, where
``metrics`` maps names to per-example tensors without gradient (the module averages them
into ``pref/*``). Inputs, each of shape (n,):

- ``policy_chosen_logps``, ``policy_rejected_logps``: log pi_theta(y | x) summed over the
  completion tokens (:func:`workbench.methods.sft.losses.sequence_logps`);
- ``ref_chosen_logps``, ``ref_rejected_logps``: the same under the reference model;
- ``chosen_lengths``, ``rejected_lengths``: completion token counts, for the losses that
  normalise by length (written |y| below).

Notation: rho_w = log pi_theta(y_w|x) - log pi_ref(y_w|x) and rho_l the same for y_l (the
implicit rewards divided by beta), h = rho_w - rho_l, sigma the logistic function. Where
TRL computes a loss differently from its paper, the paper's form is the default and TRL's an
option, as each docstring says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# What every loss returns: the per-example loss and its metrics (per-example, no gradient).
LossAndMetrics = tuple[torch.Tensor, dict[str, torch.Tensor]]


def preference_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-pair rewards, their margin and whether the pair is ranked right (no gradient)."""
    chosen, rejected = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "chosen_rewards": chosen,
        "rejected_rewards": rejected,
        "margin": chosen - rejected,
        "accuracy": (chosen > rejected).float(),
    }


def _log_ratios(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def _smoothed_sigmoid_loss(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) log sigma(z) - eps log sigma(-z)."""
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (x is clamped just below 0)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _per_token(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return logps / lengths.to(logps.dtype).clamp(min=1)


def dpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> LossAndMetrics:
    """DPO, sigmoid form; ``label_smoothing`` eps > 0 gives conservative DPO (cDPO).

    L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h),  h = rho_w - rho_l.
    Rewards: beta rho_w, beta rho_l. (Rafailov et al., 2023; cDPO: Mitchell, 2023. TRL's
    DPOTrainer has no smoothing on its sigmoid loss; with eps = 0 the two agree.)
    """
    rho_w, rho_l = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    loss = _smoothed_sigmoid_loss(beta * (rho_w - rho_l), label_smoothing)
    return loss, preference_metrics(beta * rho_w, beta * rho_l)


def ipo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    length_normalize: bool = False,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> LossAndMetrics:
    """IPO (the paper's Eq. 17, beta is its tau): L = (h - 1 / (2 beta))^2.

    ``length_normalize=True`` is TRL's variant: each log-ratio divided by its completion's
    length first, h = rho_w / |y_w| - rho_l / |y_l| (then ``chosen_lengths`` and
    ``rejected_lengths`` are needed). (Azar et al., 2023.)
    """
    rho_w, rho_l = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    if length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(
                "ipo_loss(length_normalize=True) needs chosen_lengths and rejected_lengths"
            )
        rho_w, rho_l = _per_token(rho_w, chosen_lengths), _per_token(rho_l, rejected_lengths)
    loss = (rho_w - rho_l - 1 / (2 * beta)) ** 2
    return loss, preference_metrics(beta * rho_w, beta * rho_l)


def hinge_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> LossAndMetrics:
    """Hinge (SLiC-style calibration on the DPO log-ratios): L = max(0, 1 - beta h).

    (Zhao et al., 2023, "SLiC-HF"; the DPOTrainer's ``hinge``.)
    """
    rho_w, rho_l = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    loss = torch.relu(1 - beta * (rho_w - rho_l))
    return loss, preference_metrics(beta * rho_w, beta * rho_l)


def robust_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> LossAndMetrics:
    """Robust DPO (rDPO): unbiased under labels flipped with probability eps < 1/2.

    L = [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps).
    (Chowdhury et al., 2024, "Provably Robust DPO".)
    """
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(
            f"robust_loss: label_smoothing must lie in [0, 0.5), got {label_smoothing}"
        )
    rho_w, rho_l = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    z = beta * (rho_w - rho_l)
    loss = (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)) / (
        1 - 2 * label_smoothing
    )
    return loss, preference_metrics(beta * rho_w, beta * rho_l)


def rpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> LossAndMetrics:
    """RPO: DPO plus the length-normalised NLL of the chosen completion.

    L = -log sigma(beta h) + alpha * (-log pi_theta(y_w|x) / |y_w|).
    (Pang et al., 2024, "Iterative Reasoning Preference Optimization". TRL's
    ``loss_type=["sigmoid", "sft"]`` averages the NLL over all chosen tokens of the batch
    instead of per pair; the two agree when the chosen completions have equal lengths.)
    """
    loss, metrics = dpo_loss(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        beta=beta,
    )
    nll = -_per_token(policy_chosen_logps, chosen_lengths)
    return loss + alpha * nll, {**metrics, "nll": nll.detach()}


def simpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> LossAndMetrics:
    """SimPO: length-normalised log-likelihood as the reward, a target margin, no reference.

    L = -log sigma(beta log pi(y_w|x) / |y_w| - beta log pi(y_l|x) / |y_l| - gamma);
    ``gamma`` is the paper's target reward margin (not the gamma/beta ratio some code takes).
    ``label_smoothing`` smooths it as in cDPO. Rewards: beta log pi(y|x) / |y|.
    (Meng et al., 2024; TRL's CPOTrainer with ``loss_type="simpo"``, ``cpo_alpha=0``.)
    """
    r_w = beta * _per_token(policy_chosen_logps, chosen_lengths)
    r_l = beta * _per_token(policy_rejected_logps, rejected_lengths)
    loss = _smoothed_sigmoid_loss(r_w - r_l - gamma, label_smoothing)
    return loss, preference_metrics(r_w, r_l)


def orpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float = 0.1,
) -> LossAndMetrics:
    """ORPO: NLL of the chosen completion plus an odds-ratio term, no reference model.

    With P(y|x) = exp(log pi(y|x) / |y|) (the per-token likelihood) and
    odds(y|x) = P / (1 - P):
    L = -log pi(y_w|x) / |y_w| - beta log sigma(log odds(y_w|x) - log odds(y_l|x)).
    ``beta`` is the paper's lambda. Rewards (as TRL logs them): beta log pi(y|x) / |y|.
    (Hong et al., 2024. TRL's ORPOTrainer takes the NLL over the prompt and completion tokens
    of the whole batch; the paper's and this one's is over the completion, per pair.)
    """
    mean_w = _per_token(policy_chosen_logps, chosen_lengths)
    mean_l = _per_token(policy_rejected_logps, rejected_lengths)
    log_odds = (mean_w - _log1mexp(mean_w)) - (mean_l - _log1mexp(mean_l))
    odds_term = F.logsigmoid(log_odds)
    nll = -mean_w
    metrics = preference_metrics(beta * mean_w, beta * mean_l)
    metrics.update(nll=nll.detach(), log_odds_ratio=log_odds.detach())
    return nll - beta * odds_term, metrics


def tpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    gold_nll: torch.Tensor,
    beta: float = 0.01,
    alpha: float = 1.0,
    label_smoothing: float = 0.0,
) -> LossAndMetrics:
    """TPO: a preference term on the policy alone plus the NLL of a gold completion, in one stage.

    L = -log sigma(beta (log pi(y_w|x) - log pi(y_l|x))) + alpha * NLL(y_gold|x), with
    ``gold_nll`` the gold completion's per-token NLL (n,). Rewards: beta log pi(y|x).
    (Saeidi et al., 2024, "Triple Preference Optimization". TRL's TPOTrainer averages the
    gold NLL over the batch's gold tokens rather than per triple.)
    """
    r_w, r_l = beta * policy_chosen_logps, beta * policy_rejected_logps
    loss = _smoothed_sigmoid_loss(r_w - r_l, label_smoothing)
    return loss + alpha * gold_nll, {**preference_metrics(r_w, r_l), "nll": gold_nll.detach()}


def asft_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    beta: float = 0.1,
) -> LossAndMetrics:
    """ASFT: SFT on the chosen completion plus an absolute-likelihood alignment term, no reference.

    With P(y|x) = exp(log pi(y|x) / |y|) and f(y) = log(P / (1 - P)) its log-odds,
    L_align = -log sigma(f(y_w)) - log sigma(-f(y_l)) = -log P(y_w|x) - log(1 - P(y_l|x)),
    L = -log pi(y_w|x) / |y_w| + beta L_align (``beta`` is the paper's lambda): each completion
    is pushed on its own, not against the other as in Bradley-Terry.
    (Wang et al., 2024, "ASFT: Aligned Supervised Fine-Tuning through Absolute Likelihood".)
    """
    mean_w = _per_token(policy_chosen_logps, chosen_lengths)
    mean_l = _per_token(policy_rejected_logps, rejected_lengths)
    align = -mean_w - _log1mexp(mean_l)
    nll = -mean_w
    metrics = preference_metrics(beta * mean_w, beta * mean_l)
    metrics.update(nll=nll.detach(), align=align.detach())
    return nll + beta * align, metrics


def kto_loss(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossAndMetrics:
    """KTO on unpaired completions, each labelled desirable or not.

    rho = log pi_theta(y|x) - log pi_ref(y|x), z = max(0, ``kl``) without gradient (the
    batch's KL estimate, :func:`kto_kl_estimate`):
    L = lambda_D (1 - sigma(beta (rho - z))) for a desirable y,
    L = lambda_U (1 - sigma(beta (z - rho))) for an undesirable one.
    ``policy_logps``, ``ref_logps`` (B,), ``desirable`` (B,) bool. Metrics per row:
    ``rewards`` beta rho, ``desirable``, ``kl``, ``accuracy`` (1 where the reward sits on its
    label's side of the reference point beta z) and ``margin`` (the reward, negated for an
    undesirable row). (Ethayarajh et al., 2024.)
    """
    z = kl.detach().clamp(min=0) if torch.is_tensor(kl) else torch.tensor(max(float(kl), 0.0))
    z = z.to(policy_logps)
    rho = policy_logps - ref_logps
    desirable = desirable.bool()
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (rho - z))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z - rho))),
    )
    rewards, kl_per_row = (beta * rho).detach(), z.expand_as(rho).detach()
    return loss, {
        "rewards": rewards,
        "desirable": desirable.float(),
        "kl": kl_per_row,
        "accuracy": ((rewards > beta * kl_per_row) == desirable).float(),
        "margin": torch.where(desirable, rewards, -rewards),
    }


def kto_kl_estimate(
    *, policy_mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor
) -> torch.Tensor:
    """KTO's reference point: mean over mismatched pairs (x_i, y_j), j != i, of
    log pi_theta(y_j|x_i) - log pi_ref(y_j|x_i), clamped at 0, without gradient (a scalar)."""
    estimate: torch.Tensor = (policy_mismatched_logps - ref_mismatched_logps).mean()
    return estimate.detach().clamp(min=0)


def modpo_loss(
    *,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    score_margins: torch.Tensor,
    weights: torch.Tensor | Sequence[float],
    weight: float,
    beta: float = 0.1,
) -> LossAndMetrics:
    """MODPO: DPO on one preference, with a margin from the other objectives' scores.

    For the objective trained by preference (training weight w_0) and the others' scores
    s_k(x, y) with weights w_k, ``score_margins`` (n, K) holds s_k(x, y_w) - s_k(x, y_l):
    L = -log sigma((beta / w_0) h - (1 / w_0) sum_k w_k (s_k(x, y_w) - s_k(x, y_l))).
    Sweeping the weights gives a family of policies along a front, with no RL.
    Rewards: beta rho / w_0 (the preference objective's share).
    (Zhou et al., 2024, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
    Preference Optimization".)
    """
    if weight <= 0:
        raise ValueError(f"modpo_loss: the preference objective's weight must be > 0, got {weight}")
    rho_w, rho_l = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    w = torch.as_tensor(weights, dtype=rho_w.dtype, device=rho_w.device)
    margin = (
        (score_margins.to(rho_w.dtype) * w).sum(dim=-1) if w.numel() else torch.zeros_like(rho_w)
    )
    loss = -F.logsigmoid((beta * (rho_w - rho_l) - margin) / weight)
    metrics = preference_metrics(beta * rho_w / weight, beta * rho_l / weight)
    metrics["score_margin"] = margin.detach()
    return loss, metrics
