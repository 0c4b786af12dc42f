"""The term-combining losses: per-example weights, the min-norm solver against a brute-force
search over the simplex in float64, and PMTL's region-constrained direction."""

from __future__ import annotations

import itertools

import pytest
import torch

from workbench.methods.multi_objective.losses import (
    min_norm_weights,
    pmtl_coefficients,
    preference_ray,
    scalarise_per_example,
)
from workbench.methods.sft.losses import scalarise


def brute_force_min_norm(vectors: torch.Tensor, divisions: int) -> float:
    """min |sum_k a_k v_k|^2 over the simplex lattice {k / H}, float64 (an upper bound on the
    true minimum, within O(1/H) of it)."""
    k = vectors.shape[0]
    heads = torch.tensor(
        list(itertools.product(range(divisions + 1), repeat=k - 1)), dtype=torch.float64
    )
    heads = heads[heads.sum(dim=1) <= divisions]
    alphas = torch.cat([heads, divisions - heads.sum(dim=1, keepdim=True)], dim=1) / divisions
    return float((alphas @ vectors).pow(2).sum(dim=1).min())


@pytest.mark.parametrize("k, dim, rank", [(2, 5, 2), (3, 6, 3), (3, 6, 2), (4, 8, 4), (4, 3, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_norm_weights_matches_brute_force(k, dim, rank, seed):
    g = torch.Generator().manual_seed(seed * 31 + k)
    basis = torch.randn(rank, dim, generator=g, dtype=torch.float64)
    vectors = torch.randn(k, rank, generator=g, dtype=torch.float64) @ basis + 0.3  # often acute
    gram = vectors @ vectors.T
    alpha = min_norm_weights(gram)
    assert alpha.dtype == torch.float64 and alpha.min() >= 0
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-12)
    value = float(alpha @ gram @ alpha)
    divisions = {2: 20000, 3: 600, 4: 60}[k]
    brute = brute_force_min_norm(vectors, divisions)
    assert value <= brute + 1e-9
    # Optimality on the simplex (KKT): no vertex direction lowers the objective, i.e.
    # <d, v_k> >= |d|^2 for every k, so the min-norm step raises no term to first order.
    d = alpha @ vectors
    assert torch.all(vectors @ d >= d.pow(2).sum() - 1e-9)


def test_min_norm_of_two_opposed_vectors_is_zero_and_of_one_is_itself():
    gram = torch.tensor([[4.0, -4.0], [-4.0, 4.0]], dtype=torch.float64)
    alpha = min_norm_weights(gram)
    assert alpha.tolist() == pytest.approx([0.5, 0.5])
    assert min_norm_weights(torch.tensor([[2.0]])).tolist() == [1.0]
    # A vector inside the others' hull's shadow: the shorter one wins alone.
    gram = torch.tensor([[1.0, 1.0], [1.0, 9.0]], dtype=torch.float64)  # v2 = v1 + orthogonal part
    assert min_norm_weights(gram).tolist() == pytest.approx([1.0, 0.0])


def test_min_norm_weights_refuses_a_non_square_gram():
    with pytest.raises(ValueError, match="square"):
        min_norm_weights(torch.ones(2, 3))


def test_scalarise_per_example_against_a_loop_and_scalarise():
    g = torch.Generator().manual_seed(0)
    terms = {"answer": torch.rand(5, generator=g), "brevity": torch.rand(5, generator=g)}
    weights = torch.rand(5, 2, generator=g) + 0.1
    out = scalarise_per_example(terms, weights, ["answer", "brevity"])
    for i in range(5):
        expected = (
            weights[i, 0] * terms["answer"][i] + weights[i, 1] * terms["brevity"][i]
        ) / weights[i].sum()
        assert float(out[i]) == pytest.approx(float(expected), rel=1e-6)
    same = torch.tensor([[0.3, 0.7]]).repeat(5, 1)
    assert torch.allclose(
        scalarise_per_example(terms, same, ["answer", "brevity"]),
        scalarise(terms, {"answer": 0.3, "brevity": 0.7}),
    )
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        scalarise_per_example(terms, torch.ones(5, 3), ["answer", "brevity"])


def test_preference_ray_points_where_weighted_losses_are_equal():
    u = preference_ray(torch.tensor([0.8, 0.2]))
    assert float(u.norm()) == pytest.approx(1.0)
    assert float(0.8 * u[0]) == pytest.approx(float(0.2 * u[1]))


def _setting(seed: int, losses):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(2, 7, generator=g, dtype=torch.float64)
    rays = torch.stack(
        [
            preference_ray(torch.tensor(w, dtype=torch.float64))
            for w in ([0.9, 0.1], [0.5, 0.5], [0.1, 0.9])
        ]
    )
    return grads, grads @ grads.T, torch.tensor(losses, dtype=torch.float64), rays


@pytest.mark.parametrize("seed", range(4))
def test_pmtl_inside_its_region_descends_on_every_term(seed):
    grads, gram, _, rays = _setting(seed, [1.0, 1.0])
    losses = rays[1] * 2.0  # on the middle region's ray: inside it
    c, inside = pmtl_coefficients(gram, losses, rays[1], rays[[0, 2]])
    assert inside
    d = c @ grads
    assert torch.all(grads @ d >= -1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_pmtl_outside_its_region_moves_towards_it(seed):
    grads, gram, _, rays = _setting(seed, [1.0, 1.0])
    losses = rays[0] * 2.0  # on the first region's ray, outside the middle one
    neighbours = rays[[0, 2]]
    c, inside = pmtl_coefficients(gram, losses, rays[1], neighbours)
    assert not inside
    d = c @ grads
    violated = (neighbours - rays[1]) @ losses > 0
    constraint_grads = (neighbours - rays[1]) @ grads
    # A step along -d lowers every violated constraint G_j (or d is 0: already stationary).
    assert torch.all(constraint_grads[violated] @ d >= -1e-9)
    assert float(d.norm()) > 0
