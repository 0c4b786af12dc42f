"""Policy-gradient losses for RL with verifiable rewards: GRPO and its aggregation variants.

A prompt is answered ``group_size`` times (the completions of one prompt sit in consecutive
rows); every completion is scored by R reward functions. :func:`group_advantages` turns the
(N, R) rewards into one advantage per completion, relative to the other completions of its
group (no value model). :func:`grpo_loss` is the clipped surrogate of PPO on per-token
log-probs with that advantage, an optional k3 KL penalty to a reference, and one of three
ways to average tokens into a batch loss: GRPO's per-sequence mean (Shao et al., 2024,
"DeepSeekMath"), DAPO's per-token mean (Yu et al., 2025) and Dr. GRPO's constant
normaliser (Liu et al., 2025, "Understanding R1-Zero-Like Training").

Notation: r_it = exp(log pi_theta(y_it) - log pi_old(y_it)) the importance ratio of token t of
completion i, A_i its completion's advantage, m_it the completion mask, |y_i| = sum_t m_it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

_Choice = TypeVar("_Choice")


def _one_of(what: str, value: str, table: Mapping[str, _Choice]) -> _Choice:
    if value not in table:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, table))}; got {value!r}")
    return table[value]


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, ...) -> (N / group_size, group_size, ...): one slice per prompt."""
    return x.reshape(-1, group_size, *x.shape[1:])


def _sample_std(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Bessel-corrected std (as TRL's), 0 where a single value makes it undefined."""
    count = x.numel() if dim is None else x.shape[dim]
    if count < 2:
        return torch.zeros_like(x.sum(dim=dim, keepdim=True))
    return x.std(dim=dim, keepdim=True)


def _group_std(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Std of each column within each group, repeated over the group's rows: shape of ``values``."""
    std = _sample_std(_grouped(values, group_size), dim=1)
    return std.expand(-1, group_size, *values.shape[1:]).reshape(values.shape)


def _batch_std(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """Std of each column over the whole batch, broadcast to every row."""
    return _sample_std(values, dim=0).expand_as(values)


# How a centred reward is scaled: the std it is divided by (None: not scaled).
_SCALES: dict[str, Callable[[torch.Tensor, int], torch.Tensor | None]] = {
    "group": _group_std,
    "batch": _batch_std,
    "none": lambda values, group_size: None,
}


def _centred_scaled(values: torch.Tensor, group_size: int, scale: str, eps: float) -> torch.Tensor:
    """(x - mean of x over its group) / (std + eps), the std chosen by ``scale``; per column."""
    centred = (
        _grouped(values, group_size) - _grouped(values, group_size).mean(dim=1, keepdim=True)
    ).reshape(values.shape)
    std = _SCALES[scale](values, group_size)
    return centred if std is None else centred / (std + eps)


def _sum_then_normalize(
    rewards: torch.Tensor, weights: torch.Tensor, group_size: int, scale: str, eps: float
) -> torch.Tensor:
    return _centred_scaled(rewards @ weights, group_size, scale, eps)


def _normalize_then_sum(
    rewards: torch.Tensor, weights: torch.Tensor, group_size: int, scale: str, eps: float
) -> torch.Tensor:
    # Each reward centred and scaled within its group, so a reward's units cannot swamp the
    # others; then TRL's last step: the weighted sum standardised over the whole batch.
    summed = _centred_scaled(rewards, group_size, scale, eps) @ weights
    return (summed - summed.mean()) / (_sample_std(summed, dim=None) + eps)


_COMBINES: dict[str, Callable[[torch.Tensor, torch.Tensor, int, str, float], torch.Tensor]] = {
    "sum_then_normalize": _sum_then_normalize,
    "normalize_then_sum": _normalize_then_sum,
}


def group_advantages(
    rewards: torch.Tensor,
    weights: torch.Tensor | Sequence[float],
    group_size: int,
    *,
    scale: str = "group",
    combine: str = "sum_then_normalize",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Group-relative advantages from several rewards and their preference weights.

    ``rewards`` (N, R): one column per reward function, N = prompts * ``group_size``, the
    completions of one prompt in consecutive rows; ``weights`` (R,) >= 0. With g(i) the group
    of row i, mean_g and std_g the mean and Bessel-corrected std over that group's rows, and
    s = std_g (``scale="group"``, GRPO), the std over the whole batch (``"batch"``, as
    Liu et al. 2025 advise against the group std's difficulty bias) or 1 and eps = 0 (``"none"``,
    Dr. GRPO):

    - ``combine="sum_then_normalize"``: T_i = sum_k w_k r_ik, A_i = (T_i - mean_g T) / (s(T) + eps).
    - ``combine="normalize_then_sum"``: z_ik = (r_ik - mean_g r_k) / (s(r_k) + eps) for each
      reward, S_i = sum_k w_k z_ik, then, as TRL's GRPOTrainer does after the sum,
      A_i = (S_i - mean S) / (std S + eps) with the mean and std over the whole batch. A reward
      on a 1000x larger scale then weighs only as its weight says. TRL ignores its
      ``scale_rewards`` here and always scales each reward by its group std: it equals
      ``scale="group"``; ``"batch"`` and ``"none"`` change only the per-reward step.

    Returns ``(advantages (N,), metrics)``; metrics (no gradient): ``total`` (N,) the weighted
    reward sum T_i, ``group_std`` (N,) the std of T over row i's group (0 where every
    completion of a prompt scored the same: such a group teaches nothing under
    ``sum_then_normalize``).
    """
    _one_of("scale", scale, _SCALES)
    combine_fn = _one_of("combine", combine, _COMBINES)
    if rewards.dim() != 2:
        raise ValueError(
            f"rewards must have shape (N, R), one column per reward function; got shape "
            f"{tuple(rewards.shape)}"
        )
    if not torch.is_floating_point(rewards):
        rewards = rewards.float()
    weights = torch.as_tensor(weights, dtype=rewards.dtype, device=rewards.device)
    n, n_rewards = rewards.shape
    if weights.shape != (n_rewards,):
        raise ValueError(
            f"weights must have one value per reward column ({n_rewards}); "
            f"got shape {tuple(weights.shape)}"
        )
    if group_size < 1 or n % group_size:
        raise ValueError(
            f"the batch of {n} completions does not split into groups of group_size={group_size}: "
            f"pass group_size dividing N (completions per prompt, in consecutive rows)"
        )
    if bool((weights < 0).any()):
        raise ValueError(
            "reward weights must be >= 0 (flip the reward's direction instead); "
            f"got {weights.tolist()}"
        )
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError(
            "rewards contain NaN or infinity: every reward function must return a finite number"
        )
    advantages = combine_fn(rewards, weights, group_size, scale, eps)
    total = (rewards @ weights).detach()
    return advantages, {"total": total, "group_std": _group_std(total, group_size)}


def _sequence_mean(
    masked_loss: torch.Tensor,
    mask: torch.Tensor,
    max_completion_length: int | None,
    num_tokens: float | None,
) -> torch.Tensor:
    return masked_loss.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _token_mean(
    masked_loss: torch.Tensor,
    mask: torch.Tensor,
    max_completion_length: int | None,
    num_tokens: float | None,
) -> torch.Tensor:
    # Row i's share of sum_it / (tokens), times N so that the mean over rows is the batch loss.
    tokens = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
    return masked_loss.sum(dim=1) * (masked_loss.shape[0] / tokens)


def _constant_normaliser(
    masked_loss: torch.Tensor,
    mask: torch.Tensor,
    max_completion_length: int | None,
    num_tokens: float | None,
) -> torch.Tensor:
    width = masked_loss.shape[1] if max_completion_length is None else max_completion_length
    return masked_loss.sum(dim=1) / width


# Per-example values whose mean over the batch is the aggregated loss.
# (masked per-token loss, mask, max_completion_length, num_tokens) -> per-example values
_AGGREGATIONS: dict[
    str, Callable[[torch.Tensor, torch.Tensor, int | None, float | None], torch.Tensor]
] = {
    "sequence": _sequence_mean,
    "token": _token_mean,
    "dr_grpo": _constant_normaliser,
}
# Aggregations whose ``num_tokens`` is the completion-token count of a whole optimizer step
# (every micro-batch and rank): a trainer must know it before the step's first backward.
STEP_TOKEN_AGGREGATIONS = frozenset({"token"})


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over every completion token of the batch (no gradient), as a 0-d tensor."""
    return (values.detach() * mask).sum() / mask.sum().clamp(min=1)


def _check_grpo_inputs(
    policy_logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    ref_logps: torch.Tensor | None,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
    max_completion_length: int | None,
    num_tokens: float | None,
) -> None:
    shape = tuple(policy_logps.shape)
    if len(shape) != 2:
        raise ValueError(
            f"policy_logps must have shape (N, T) (per-token log-probs); got shape {shape}"
        )
    for name, tensor in (
        ("old_logps", old_logps),
        ("completion_mask", completion_mask),
        ("ref_logps", ref_logps),
    ):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have the shape of policy_logps {shape}; got {tuple(tensor.shape)}"
            )
    if tuple(advantages.shape) != shape[:1]:
        raise ValueError(
            f"advantages must have shape ({shape[0]},), one per completion; "
            f"got {tuple(advantages.shape)}"
        )
    if beta < 0:
        raise ValueError(f"beta (the KL coefficient) must be >= 0; got {beta}")
    if beta > 0 and ref_logps is None:
        raise ValueError(
            f"beta={beta} puts a KL penalty to the reference: pass ref_logps, or set beta=0"
        )
    if not 0 <= epsilon_low < 1 or epsilon_high < 0:
        raise ValueError(
            "clipping needs 0 <= epsilon_low < 1 and epsilon_high >= 0; "
            f"got {epsilon_low}, {epsilon_high}"
        )
    for name, value in (
        ("max_completion_length", max_completion_length),
        ("num_tokens", num_tokens),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be a positive count; got {value}")


def grpo_loss(
    *,
    policy_logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    aggregation: str = "sequence",
    max_completion_length: int | None = None,
    num_tokens: float | None = None,
    kl_importance_weighted: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's clipped surrogate with an optional KL penalty, aggregated three ways.

    Inputs (N, T): ``policy_logps``, ``old_logps`` (the sampling policy's, no gradient) and
    ``ref_logps`` per-token log-probs of the sampled tokens, ``completion_mask`` 1 on the
    completion (up to and including its end token); ``advantages`` (N,). Per token,
    with eps_high = eps_low unless given (DAPO's clip-higher sets it larger):

        l_it = -min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i) + beta k3_it,
        k3_it = exp(q_it) - q_it - 1,  q_it = log pi_ref(y_it) - log pi_theta(y_it),

    k3 being the unbiased, always non-negative estimator of KL(pi_theta || pi_ref) (Schulman,
    2020), as the GRPO paper uses it. ``kl_importance_weighted=True`` multiplies k3 by r_it,
    which makes its gradient the unbiased reverse-KL gradient for tokens sampled from pi_old
    (DeepSeek-AI, 2025, "DeepSeek-V3.2"); TRL's GRPOTrainer does so by default
    (``use_bias_correction_kl``). Clipping binds only where it removes the incentive:
    r > 1 + eps_high when A > 0, r < 1 - eps_low when A < 0. The batch loss, by
    ``aggregation``:

    - ``"sequence"`` (GRPO): (1/N) sum_i (1/|y_i|) sum_t m_it l_it; per-example value
      L_i = (1/|y_i|) sum_t m_it l_it.
    - ``"token"`` (DAPO): sum_it m_it l_it / n_tok, n_tok = sum_it m_it, so long completions
      weigh by their length; per-example L_i = N sum_t m_it l_it / n_tok. ``num_tokens``
      replaces n_tok, e.g. by the completion tokens of every micro-batch of one optimiser step
      (DAPO's normaliser under gradient accumulation, TRL's ``dapo``; with the default, TRL's
      ``bnpo``).
    - ``"dr_grpo"`` (Dr. GRPO): sum_it m_it l_it / (N L), L = ``max_completion_length``
      (default: T), a constant, so no length bias; per-example L_i = sum_t m_it l_it / L.

    In every case ``per_example.mean()`` is the batch loss. Returns ``(per_example (N,),
    metrics)``; metrics are 0-d tensors without gradient, means over all completion tokens:
    ``clip_ratio`` (share of tokens clipped, either side), ``clip_ratio_low``,
    ``clip_ratio_high``, ``ratio`` (mean r) and, when ``ref_logps`` is given, ``kl`` (mean k3,
    times r when ``kl_importance_weighted``: the KL term as it enters the loss).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    _check_grpo_inputs(
        policy_logps,
        old_logps,
        advantages,
        completion_mask,
        ref_logps,
        beta,
        epsilon_low,
        epsilon_high,
        max_completion_length,
        num_tokens,
    )
    aggregate = _one_of("aggregation", aggregation, _AGGREGATIONS)
    mask = completion_mask.to(policy_logps.dtype)
    advantage = advantages.to(policy_logps.dtype).unsqueeze(1)
    ratio = torch.exp(policy_logps - old_logps)
    clipped_ratio = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantage, clipped_ratio * advantage)
    metrics = {"ratio": _masked_mean(ratio, mask)}
    if ref_logps is not None:
        q = ref_logps - policy_logps
        k3 = torch.exp(q) - q - 1
        if kl_importance_weighted:
            k3 = k3 * ratio
        metrics["kl"] = _masked_mean(k3, mask)
        if beta > 0:
            per_token = per_token + beta * k3
    clipped_low = ((ratio < 1 - epsilon_low) & (advantage < 0)).to(mask.dtype)
    clipped_high = ((ratio > 1 + epsilon_high) & (advantage > 0)).to(mask.dtype)
    metrics.update(
        clip_ratio=_masked_mean(clipped_low + clipped_high, mask),
        clip_ratio_low=_masked_mean(clipped_low, mask),
        clip_ratio_high=_masked_mean(clipped_high, mask),
    )
    per_example = aggregate(per_token * mask, mask, max_completion_length, num_tokens)
    return per_example, metrics
