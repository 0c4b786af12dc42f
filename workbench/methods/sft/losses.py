"""Supervised losses: token log-probs, completion NLL, segment NLL, brevity, scalarisation.

Label position ``t`` scores the token at ``t`` given
the tokens before it, so logits are shifted by one inside :func:`token_logprobs`.
"""

from __future__ import annotations

import torch

from workbench.data.encode import IGNORE_INDEX, SEGMENT_IDS


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 logits to float32; keep float64 (gradcheck, references) as is."""
    return x if x.dtype == torch.float64 else x.float()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the label tokens and the mask of scored positions.

    ``logits`` (B, T, V) and ``labels`` (B, T); returns (B, T-1) log-probs of
    ``labels[:, 1:]`` under ``logits[:, :-1]`` (0 where ignored) and the boolean mask.
    """
    logp, mask, _ = label_logprobs(logits, labels)
    return logp, mask


def label_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, extra_token: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs`, plus log p(``extra_token``) at each scored position (0
    elsewhere; None without ``extra_token``) from the same softmax, e.g. the end token for
    the brevity term."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp_all = torch.log_softmax(_at_least_float32(logits[:, :-1, :]), dim=-1)
    logp = logp_all.gather(-1, targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    extra = None if extra_token is None else logp_all[..., extra_token] * mask
    return logp * mask, mask, extra


def sequence_logps(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row sum of the scored tokens' log-probs: log p(completion | prompt), shape (B,)."""
    return (logp * mask).sum(dim=1)


def masked_mean_nll(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean negative log-likelihood over ``mask`` (0 for rows with no token).

    L_i = -sum_t m_it log p_it / max(1, sum_t m_it)
    """
    counts = mask.sum(dim=1)
    total = -(logp * mask).sum(dim=1)
    return total / counts.clamp(min=1)


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Completion NLL per example: L_i = mean_{t in completion_i} -log p(y_t | y_<t, x_i)."""
    logp, mask = token_logprobs(logits, labels)
    per_example = masked_mean_nll(logp, mask)
    return per_example, {"tokens": mask.sum().float()}


def task_balanced_nll(
    logp: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor, balance: str
) -> torch.Tensor:
    """Per-example shares of a loss in which each task's mean loss counts equally (MFTCoder).

    With the B rows of a batch in tasks t (``groups``: one id per row), |T| the tasks present,
    n_i row i's scored tokens and l_i its mean NLL (:func:`masked_mean_nll`):

        tokens:   L = 1/|T| sum_t  sum_{i in t} n_i l_i / sum_{i in t} n_i
        examples: L = 1/|T| sum_t  mean_{i in t} l_i

    ``tokens`` is MFTCoder's balanced loss (each task's token mean, the tasks averaged);
    ``examples`` averages each task's rows first. ``none`` is the plain batch mean of l_i,
    where a task counts as many times as it has rows (and, per token, as long as they are).
    Returned as v_i with mean_i v_i = L (v_i = B n_i l_i / (|T| N_t) or B l_i / (|T| M_t), N_t
    and M_t the task's tokens and rows), so the module's batch mean of its per-example losses
    is L unchanged.
    """
    per_example = masked_mean_nll(logp, mask)
    if balance == "none":
        return per_example
    _, task_index = torch.unique(groups, return_inverse=True)
    task_count = int(task_index.max()) + 1
    if balance == "tokens":
        counts = mask.sum(dim=1).to(per_example.dtype)
        share = per_example * counts  # the row's summed NLL
    elif balance == "examples":
        counts = torch.ones_like(per_example)
        share = per_example
    else:
        raise ValueError(f"task_balance = {balance!r}: allowed: none, tokens, examples")
    per_task = torch.zeros(task_count, dtype=counts.dtype, device=counts.device)
    per_task = per_task.index_add(0, task_index, counts).clamp(min=1)
    return len(per_example) * share / (task_count * per_task[task_index])


def segment_nll(
    logits: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor, segment: str
) -> torch.Tensor:
    """Per-example mean NLL over the completion tokens of one named segment.

    L_i^seg = -sum_t [seg_it = s] log p(y_t | y_<t) / max(1, sum_t [seg_it = s])
    """
    logp, mask = token_logprobs(logits, labels)
    return masked_mean_nll(logp, segment_mask(mask, segments, segment))


def brevity_loss(
    logits: torch.Tensor, labels: torch.Tensor, eos_id: int, position_scale: float = 3.0
) -> torch.Tensor:
    """Pressure to stop early: position-weighted NLL of the end token over the completion.

    L_i = sum_t c * (t / n_i) * -log p(eos | y_<t) / n_i over the n_i completion positions
    t = 0..n_i-1, with c = ``position_scale``. The weight grows with the relative position,
    so against an answer term of weight w_a a brevity weight w_b makes the optimum stop near
    relative position w_a / (c * w_b): weights trade length for completeness smoothly
    instead of flipping between "full answer" and "empty answer".
    """
    logp_all = torch.log_softmax(_at_least_float32(logits[:, :-1, :]), dim=-1)
    mask = labels[:, 1:] != IGNORE_INDEX
    return brevity_from_eos_logprobs(logp_all[..., eos_id], mask, position_scale)


def brevity_from_eos_logprobs(
    eos_logp: torch.Tensor, mask: torch.Tensor, position_scale: float = 3.0
) -> torch.Tensor:
    """:func:`brevity_loss` from log p(eos | y_<t) at each scored position (B, T-1).

    The form a fused head computes (per-token log-probs with the end token as target at
    every position), so the full logits are never needed.
    """
    counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
    position = (mask.cumsum(dim=1) - 1).clamp(min=0) * mask
    weight = position_scale * position / counts
    return (weight * -eos_logp * mask).sum(dim=1) / counts.squeeze(1)


def segment_mask(mask: torch.Tensor, segments: torch.Tensor, segment: str) -> torch.Tensor:
    """Scored positions (B, T-1) whose label token belongs to ``segment``."""
    return mask & (segments[:, 1:] == SEGMENT_IDS[segment])


def scalarise(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted mean of per-example loss terms: L = sum_k w_k L_k / sum_k w_k.

    Normalising by the weight sum keeps the loss scale (and so the learning rate's meaning)
    the same across a weight sweep.
    """
    total_weight = sum(weights.values())
    if total_weight <= 0:
        raise ValueError("at least one loss term needs a positive training weight")
    out = None
    for name, w in weights.items():
        if w == 0:
            continue
        part = terms[name] * (w / total_weight)
        out = part if out is None else out + part
    assert out is not None  # a positive total weight has a nonzero term
    return out
