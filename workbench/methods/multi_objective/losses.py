"""Combining several loss terms into one descent direction: per-example weights, and the
min-norm combination of the terms' gradients (MGDA) restricted to a preference region (PMTL).

All functions are pure: they take per-example terms, or the Gram matrix of the terms'
gradients (``gram[k, l] = <grad L_k, grad L_l>`` over every trained parameter), and return
per-example losses or combination coefficients. A module backpropagates
``sum_k coefficient_k * L_k`` (coefficients detached), whose gradient is the combined direction,
so the min-norm problem only ever needs the K x K Gram matrix, never the flattened gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Frank-Wolfe stops when its duality gap falls below this (in units of the objective), or
# after FW_MAX_ITERATIONS; the problems here have a handful of vectors.
FW_TOLERANCE = 1e-12
FW_MAX_ITERATIONS = 2000


def scalarise_per_example(
    terms: dict[str, torch.Tensor], weights: torch.Tensor, names: Sequence[str]
) -> torch.Tensor:
    """Per-example weighted mean of loss terms, each example with its own weights.

    ``weights`` is (B, K), column k weighting ``terms[names[k]]`` (each (B,)):
    L_i = sum_k w_ik L_ik / sum_k w_ik. With every row equal to w this is
    :func:`workbench.methods.sft.losses.scalarise` with weights w.
    """
    if weights.ndim != 2 or weights.shape[1] != len(names):
        raise ValueError(
            f"weights must be (batch, {len(names)}) for terms {list(names)}, "
            f"got shape {tuple(weights.shape)}"
        )
    stacked = torch.stack([terms[name] for name in names], dim=1)  # (B, K)
    weights = weights.to(stacked.dtype)
    total = weights.sum(dim=1)
    if bool((total <= 0).any()):
        raise ValueError("every example needs a positive weight on at least one term")
    return (stacked * weights).sum(dim=1) / total


def _pair_minimum(gram: torch.Tensor, i: int, j: int) -> tuple[float, float]:
    """min over t in [0, 1] of |t v_i + (1 - t) v_j|^2: (t, value), in closed form."""
    a, b, c = gram[i, i], gram[i, j], gram[j, j]
    denominator = a - 2 * b + c
    t = 0.5 if denominator <= 0 else float(((c - b) / denominator).clamp(0.0, 1.0))
    value = t * t * a + 2 * t * (1 - t) * b + (1 - t) * (1 - t) * c
    return t, float(value)


def min_norm_weights(
    gram: torch.Tensor, max_iterations: int = FW_MAX_ITERATIONS, tolerance: float = FW_TOLERANCE
) -> torch.Tensor:
    """The point of the simplex minimising ``alpha^T gram alpha``: the weights of the
    min-norm element of the convex hull of vectors whose Gram matrix is ``gram`` (K, K).

    Désidéri's MGDA direction (2012) solved as in Sener & Koltun's MGDA-UB (2018): the best
    pair in closed form (``t* = (c - b) / (a - 2b + c)`` clipped to [0, 1], ``a = |v_i|^2``,
    ``b = <v_i, v_j>``, ``c = |v_j|^2``), then Frank-Wolfe with exact line search until the
    duality gap ``alpha^T g - min_k g_k`` (``g = gram alpha``) is below ``tolerance``. Works in
    float64; returns (K,) in the input's dtype. The min-norm point d = sum alpha_k v_k satisfies
    ``<d, v_k> >= |d|^2`` for every k: a step along -d increases no term to first order.
    """
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square matrix, got shape {tuple(gram.shape)}")
    m = gram.detach().to(torch.float64)
    k = m.shape[0]
    alpha = torch.zeros(k, dtype=torch.float64, device=m.device)
    best = int(torch.argmin(torch.diagonal(m)))
    alpha[best], value = 1.0, float(m[best, best])
    for i in range(k):
        for j in range(i + 1, k):
            t, pair_value = _pair_minimum(m, i, j)
            if pair_value < value:
                alpha.zero_()
                alpha[i], alpha[j], value = t, 1.0 - t, pair_value
    for _ in range(max_iterations):
        g = m @ alpha
        vertex = int(torch.argmin(g))
        gap = float(alpha @ g - g[vertex])
        if gap <= tolerance:
            break
        direction = -alpha
        direction[vertex] += 1.0
        # Exact line search along alpha + s (e_vertex - alpha), s in [0, 1].
        curvature = float(direction @ m @ direction)
        slope = float(direction @ g)
        step = 1.0 if curvature <= 0 else min(1.0, max(0.0, -slope / curvature))
        if step == 0.0:
            break
        alpha = alpha + step * direction
    return alpha.clamp(min=0.0).div(alpha.clamp(min=0.0).sum()).to(gram.dtype)


def preference_ray(weights: torch.Tensor) -> torch.Tensor:
    """The direction in loss space a preference points at: ``u_k ∝ 1 / w_k``, unit length.

    A larger weight asks for a smaller loss, so the ray where ``w_k L_k`` is the same for every
    k (the exact-Pareto-optimal ray of Mahapatra & Rajan, 2020) is the region's centre.
    """
    inverse: torch.Tensor = 1.0 / weights.to(torch.float64).clamp(min=1e-3)
    ray: torch.Tensor = inverse / inverse.norm()
    return ray


def pmtl_coefficients(
    gram: torch.Tensor,
    losses: torch.Tensor,
    preference: torch.Tensor,
    neighbours: torch.Tensor,
    active_margin: float = 1e-3,
) -> tuple[torch.Tensor, bool]:
    """Coefficients ``c`` (K,) of the descent direction ``d = sum_k c_k grad L_k`` that keeps
    the loss vector in a preference's region (Pareto Multi-Task Learning, Lin et al., 2019).

    ``losses`` (K,) are the current term values, ``preference`` the region's ray ``u`` and
    ``neighbours`` (R, K) the rays of the other regions (:func:`preference_ray` of each). The
    region is the cone of loss vectors closer in angle to ``u`` than to any neighbour:
    ``G_j = (u_j - u)^T L <= 0`` for every j, a linear constraint whose gradient is
    ``sum_k (u_j - u)_k grad L_k``.

    - Outside the region (some ``G_j > 0``): PMTL's first phase, the min-norm combination of
      the violated constraints' gradients, which moves towards the region whatever it costs
      a term.
    - Inside: the min-norm element of the hull of every term's gradient and the nearly
      active constraints' (``G_j >= -active_margin``): MGDA kept inside the region; it
      increases no term to first order.

    Returns ``(c, inside)``; ``gram`` is the terms' gradients' Gram matrix (K, K).
    """
    m = gram.detach().to(torch.float64)
    k = m.shape[0]
    u = preference.to(torch.float64)
    rays = neighbours.to(torch.float64).reshape(-1, k)
    values = losses.detach().to(torch.float64)
    constraints = rays - u  # (R, K): row j holds the coefficients of G_j in the terms
    slack = constraints @ values
    violated = slack > 0
    inside = not bool(violated.any())
    if inside:
        vectors = torch.cat(
            [
                torch.eye(k, dtype=torch.float64, device=m.device),
                constraints[slack >= -active_margin],
            ]
        )
    else:
        vectors = constraints[violated]
    beta = min_norm_weights(vectors @ m @ vectors.T)
    return (vectors.T @ beta).to(gram.dtype), inside
