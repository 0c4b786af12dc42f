"""Merging task tensors: sparsifiers, consensus rules, and the methods built from them.

A task tensor is one weight's change under fine-tuning, ``tau_k = theta_k - theta_0``. A
method sparsifies each ``tau_k`` (:func:`sparsify`), weights them, and combines them with a
consensus rule (:func:`weighted_sum`, or :func:`sign_elected_mean`: the sign election of
:func:`elect_sign` followed by :func:`disjoint_mean`); :func:`merge_task_tensors` is that
composition, looking both up in ``catalog.SPARSIFIERS`` and ``catalog.CONSENSUS_RULES``.

Where peft's ``peft.utils.merge_utils`` has a method (``task_arithmetic``, ``magnitude_prune``,
``ties``, ``dare_linear``, ``dare_ties``), the function of the same name here takes the same
arguments and gives the same result (tested on the same tensors; for DARE with the same
random state). Two choices follow peft rather than the papers, so the two agree: the TIES sign
is elected from the unweighted trimmed tensors, and a sign tie elects ``+``. DARE draws its
mask from torch's global generator unless a ``generator`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.merging.catalog import CONSENSUS_RULES, METHODS, SPARSIFIERS
from workbench.spec.registry import resolve


def _weights_like(weights, stacked: torch.Tensor) -> torch.Tensor:
    """``weights`` as a (K, 1, ..., 1) tensor that broadcasts over the stacked task tensors."""
    w = (
        weights
        if isinstance(weights, torch.Tensor)
        else torch.tensor(list(weights), dtype=stacked.dtype)
    )
    w = w.to(stacked.device)
    return w.reshape(w.shape + (1,) * (stacked.dim() - w.dim()))


# -- sparsifiers: which entries of one task tensor survive ---------------------------------


def keep_all(tensor: torch.Tensor) -> torch.Tensor:
    """Every entry survives."""
    return tensor


def magnitude_trim(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` entries of largest magnitude, zero the rest."""
    if density >= 1:
        return tensor
    keep = int(density * tensor.numel())
    flat = tensor.reshape(-1)
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat.abs(), k=keep).indices] = 1
    return tensor * mask.reshape(tensor.shape)


def random_drop(
    tensor: torch.Tensor,
    density: float,
    *,
    rescale: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` and (``rescale``) divide the
    survivors by ``density``, so the expected tensor is unchanged."""
    if density >= 1:
        return tensor
    keep = torch.bernoulli(torch.full_like(tensor, density), generator=generator)
    dropped = tensor * keep
    return dropped / density if rescale else dropped


def breadcrumbs_trim(tensor: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Model breadcrumbs: zero the ``int(gamma * numel)`` largest-magnitude entries (outliers)
    and keep the next ``int(density * numel)``; the small rest is zeroed too."""
    n = tensor.numel()
    top, keep = int(gamma * n), int(density * n)
    if top == 0 and keep >= n:
        return tensor
    flat = tensor.reshape(-1)
    mask = torch.zeros_like(flat)
    order = torch.topk(flat.abs(), k=min(n, top + keep)).indices  # descending magnitude
    mask[order[top:]] = 1
    return tensor * mask.reshape(tensor.shape)


def sparsify(
    tensor: torch.Tensor,
    how: str,
    density: float = 1.0,
    *,
    gamma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One task tensor through the sparsifier ``how`` (``catalog.SPARSIFIERS``), given the
    settings it takes."""
    entry = SPARSIFIERS.get(how)
    if entry is None:
        raise ValueError(f"unknown sparsifier {how!r}; allowed: {', '.join(SPARSIFIERS)}")
    offered = {"density": density, "gamma": gamma, "generator": generator}
    return resolve(entry.apply)(tensor, **{name: offered[name] for name in entry.takes})


# -- consensus rules: how the task tensors combine -----------------------------------------


def weighted_sum(stacked: torch.Tensor, weights) -> torch.Tensor:
    """sum_k w_k tau_k over the first dimension."""
    return (stacked * _weights_like(weights, stacked)).sum(dim=0)


def elect_sign(stacked: torch.Tensor, majority_sign_method: str = "total") -> torch.Tensor:
    """Per entry, whether each task tensor's sign agrees with the elected one: the sign of
    sum_k tau_k (``total``) or of sum_k sign(tau_k) (``frequency``); a tie elects ``+``."""
    signs = stacked.sign()
    if majority_sign_method == "total":
        score = stacked.sum(dim=0)
    elif majority_sign_method == "frequency":
        score = signs.sum(dim=0)
    else:
        raise ValueError(
            f"majority_sign_method {majority_sign_method!r}: allowed: total, frequency"
        )
    elected = torch.where(score >= 0, 1, -1)
    return signs == elected


def disjoint_mean(weighted: torch.Tensor, agrees: torch.Tensor) -> torch.Tensor:
    """Per entry, the mean of the (already weighted) task tensors that agree with the elected
    sign; an entry none agrees on is 0."""
    total = (weighted * agrees).sum(dim=0)
    return total / agrees.sum(dim=0).clamp(min=1)


def sign_elected_mean(
    stacked: torch.Tensor, weights, majority_sign_method: str = "total"
) -> torch.Tensor:
    """TIES' consensus: the sign is elected from the (sparsified) unweighted tensors, then
    the weighted tensors that agree with it are averaged (:func:`disjoint_mean`)."""
    agrees = elect_sign(stacked, majority_sign_method)
    return disjoint_mean(stacked * _weights_like(weights, stacked), agrees)


# -- composition ---------------------------------------------------------------------------


def merge_task_tensors(
    task_tensors: Sequence[torch.Tensor],
    weights,
    *,
    sparsifier: str = "none",
    consensus: str = "sum",
    density: float = 1.0,
    gamma: float = 0.0,
    majority_sign_method: str = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sparsify each task tensor, weight it, and combine them by the consensus rule
    ``consensus`` (``catalog.CONSENSUS_RULES``: ``sum``, or ``sign_elect``, whose sign is
    elected from the sparsified, unweighted tensors)."""
    rule = CONSENSUS_RULES.get(consensus)
    if rule is None:
        raise ValueError(
            f"unknown consensus rule {consensus!r}; allowed: {', '.join(CONSENSUS_RULES)}"
        )
    kept = [
        sparsify(t, sparsifier, density, gamma=gamma, generator=generator) for t in task_tensors
    ]
    stacked = torch.stack(kept, dim=0)
    offered = {"majority_sign_method": majority_sign_method}
    return resolve(rule.combine)(stacked, weights, **{name: offered[name] for name in rule.takes})


def merge_by_method(
    method: str,
    task_tensors: Sequence[torch.Tensor],
    weights,
    *,
    density: float = 1.0,
    gamma: float = 0.0,
    majority_sign_method: str = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The merged task tensor of a method of ``catalog.METHODS`` (``linear`` divides the
    weights by their sum: the soup's average, as a change from the base)."""
    info = METHODS[method]
    if info.normalize:
        w = (
            weights
            if isinstance(weights, torch.Tensor)
            else torch.tensor(list(weights), dtype=torch.float64)
        )
        weights = w / w.sum()
    return merge_task_tensors(
        task_tensors,
        weights,
        sparsifier=info.sparsify,
        consensus=info.consensus,
        density=density,
        gamma=gamma,
        majority_sign_method=majority_sign_method,
        generator=generator,
    )


# -- the methods under peft's names and arguments ------------------------------------------


def task_arithmetic(task_tensors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k tau_k (Ilharco et al., 2023)."""
    return merge_task_tensors(task_tensors, weights)


def magnitude_prune(
    task_tensors: list[torch.Tensor], weights: torch.Tensor, density: float
) -> torch.Tensor:
    """sum_k w_k trim(tau_k): each tensor keeps its top ``density`` fraction by magnitude."""
    return merge_task_tensors(task_tensors, weights, sparsifier="magnitude", density=density)


def ties(
    task_tensors: list[torch.Tensor],
    weights: torch.Tensor,
    density: float,
    majority_sign_method: str = "total",
) -> torch.Tensor:
    """TIES (Yadav et al., 2023): trim each tensor to its top ``density`` by magnitude, elect a
    sign per entry, average the weighted entries that agree with it."""
    return merge_task_tensors(
        task_tensors,
        weights,
        sparsifier="magnitude",
        consensus="sign_elect",
        density=density,
        majority_sign_method=majority_sign_method,
    )


def dare_linear(
    task_tensors: list[torch.Tensor],
    weights: torch.Tensor,
    density: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DARE (Yu et al., 2024) with a sum: drop entries at random (keep probability
    ``density``), rescale by 1/density, then sum_k w_k tau_k."""
    return merge_task_tensors(
        task_tensors, weights, sparsifier="random", density=density, generator=generator
    )


def dare_ties(
    task_tensors: list[torch.Tensor],
    weights: torch.Tensor,
    density: float,
    majority_sign_method: str = "total",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DARE's random drop and rescale, then TIES' sign election and disjoint mean."""
    return merge_task_tensors(
        task_tensors,
        weights,
        sparsifier="random",
        consensus="sign_elect",
        density=density,
        majority_sign_method=majority_sign_method,
        generator=generator,
    )


def breadcrumbs(
    task_tensors: list[torch.Tensor], weights: torch.Tensor, density: float, gamma: float = 0.01
) -> torch.Tensor:
    """Model breadcrumbs (Davari & Belilovsky, 2024): drop each tensor's ``gamma`` largest and
    keep the next ``density`` fraction by magnitude, then sum_k w_k tau_k."""
    return merge_task_tensors(
        task_tensors, weights, sparsifier="breadcrumbs", density=density, gamma=gamma
    )
