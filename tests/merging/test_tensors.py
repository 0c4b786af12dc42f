"""Merge methods on task tensors: peft's merge utilities as the oracle, and invariants."""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils as peft_merge

from workbench.merging import catalog, state_dicts, tensors
from workbench.spec.errors import SpecError


def _task_tensors(seed: int, count: int = 3, shape=(12, 17)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(count)]


WEIGHTS = torch.tensor([0.7, 0.2, 1.3])


@pytest.mark.parametrize("seed", [0, 1])
def test_task_arithmetic_and_magnitude_prune_equal_peft(seed):
    ts = _task_tensors(seed)
    assert torch.equal(
        tensors.task_arithmetic(ts, WEIGHTS), peft_merge.task_arithmetic(ts, WEIGHTS)
    )
    for density in (0.0, 0.3, 0.75):
        ours = tensors.magnitude_prune(ts, WEIGHTS, density)
        assert torch.equal(ours, peft_merge.magnitude_prune(ts, WEIGHTS, density))


@pytest.mark.parametrize("majority_sign_method", ["total", "frequency"])
@pytest.mark.parametrize("density", [0.2, 0.5, 0.9])
def test_ties_equals_peft(density, majority_sign_method):
    ts = _task_tensors(3)
    ours = tensors.ties(ts, WEIGHTS, density, majority_sign_method)
    assert torch.equal(ours, peft_merge.ties(ts, WEIGHTS, density, majority_sign_method))


@pytest.mark.parametrize("mask_seed", [0, 7])
@pytest.mark.parametrize("density", [0.3, 0.8])
def test_dare_equals_peft_with_the_same_mask_seed(density, mask_seed):
    ts = _task_tensors(5)
    torch.manual_seed(mask_seed)
    reference = peft_merge.dare_linear(ts, WEIGHTS, density)
    torch.manual_seed(mask_seed)
    assert torch.equal(tensors.dare_linear(ts, WEIGHTS, density), reference)
    for sign in ("total", "frequency"):
        torch.manual_seed(mask_seed)
        reference = peft_merge.dare_ties(ts, WEIGHTS, density, sign)
        torch.manual_seed(mask_seed)
        assert torch.equal(tensors.dare_ties(ts, WEIGHTS, density, sign), reference)
    # A generator of its own gives the same masks without touching the global one.
    state = torch.random.get_rng_state()
    ours = tensors.dare_linear(
        ts, WEIGHTS, density, generator=torch.Generator().manual_seed(mask_seed)
    )
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(mask_seed)
    assert torch.equal(ours, peft_merge.dare_linear(ts, WEIGHTS, density))


def test_breadcrumbs_drops_outliers_and_the_small_rest():
    tau = torch.arange(1.0, 101.0) * torch.tensor([1.0, -1.0]).repeat(50)  # |tau| = 1 ... 100
    kept = tensors.breadcrumbs_trim(tau, density=0.3, gamma=0.05)
    survivors = kept[kept != 0].abs().sort().values
    assert torch.equal(
        survivors, torch.arange(66.0, 96.0)
    )  # the 5 largest and the 65 smallest are gone
    assert torch.equal(kept[kept != 0].sign(), tau[kept != 0].sign())


def _model(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(10, 6, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(8, 6, generator=g),
        "model.layers.1.mlp.up_proj.weight": torch.randn(8, 6, generator=g),
        "model.norm.weight": torch.randn(6, generator=g),
    }


@pytest.mark.parametrize("method", [m for m, info in catalog.METHODS.items() if not info.learned])
def test_merging_one_model_with_weight_one_returns_it_unchanged(method):
    base, tuned = _model(0), _model(1)
    settings = catalog.check_settings(
        method, 1, [1.0], density=1.0, gamma=0.0, lines_alpha=1.0, lines_beta=0.0
    )
    merged = state_dicts.merge_models(base, [state_dicts.task_vector(base, tuned)], settings)
    for name, value in tuned.items():
        assert torch.equal(merged[name], value), name


def test_linear_soup_is_the_weighted_average_and_lines_scales_by_depth():
    base, a, b = _model(0), _model(1), _model(2)
    vectors = [state_dicts.task_vector(base, m) for m in (a, b)]
    soup = state_dicts.merge_models(base, vectors, catalog.check_settings("linear", 2, [3.0, 1.0]))
    for name in base:
        torch.testing.assert_close(soup[name], 0.75 * a[name] + 0.25 * b[name])
    lines = state_dicts.merge_models(
        base,
        vectors,
        catalog.check_settings("lines", 2, [1.0, 1.0], lines_alpha=0.2, lines_beta=0.6),
    )
    # embeddings: block 0 of 2 (scale 0.2); block 1 and the final norm: 0.2 + 0.6.
    for name, scale in [
        ("model.embed_tokens.weight", 0.2),
        ("model.layers.0.mlp.up_proj.weight", 0.2),
        ("model.layers.1.mlp.up_proj.weight", 0.8),
        ("model.norm.weight", 0.8),
    ]:
        torch.testing.assert_close(
            lines[name], base[name] + scale * (vectors[0][name] + vectors[1][name]).float()
        )


def test_state_dict_dare_is_reproducible_by_seed():
    base = _model(0)
    vectors = [state_dicts.task_vector(base, _model(s)) for s in (1, 2)]
    settings = catalog.check_settings("dare_ties", 2, [1.0, 1.0], density=0.5, seed=3)
    one = state_dicts.merge_models(base, vectors, settings)
    again = state_dicts.merge_models(base, vectors, settings)
    other = state_dicts.merge_models(
        base, vectors, catalog.check_settings("dare_ties", 2, [1.0, 1.0], density=0.5, seed=4)
    )
    assert all(torch.equal(one[n], again[n]) for n in base)
    assert not all(torch.equal(one[n], other[n]) for n in base)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: catalog.check_settings("tie", 2),
            "merge.method = 'tie': unknown; allowed: linear",
        ),
        (
            lambda: catalog.check_settings("ties", 2, [1.0]),
            "merge.weights = [1.0]: 1 values for 2 models",
        ),
        (
            lambda: catalog.check_settings("ties", 2, density=1.5),
            "merge.density = 1.5: must be in (0, 1]",
        ),
        (
            lambda: catalog.check_settings("ties", 2, majority_sign_method="most"),
            "allowed: total, frequency",
        ),
        (
            lambda: catalog.check_settings("breadcrumbs", 2, density=0.9, gamma=0.2),
            "density + gamma <= 1",
        ),
        (
            lambda: catalog.check_settings("linear", 2, [1.0, -1.0]),
            "divides by their sum, which is 0",
        ),
    ],
)
def test_bad_settings_name_the_field_and_what_is_allowed(call, message):
    with pytest.raises(
        SpecError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]")
        .replace("+", r"\+"),
    ):
        call()


def test_the_tables_hold_the_functions_the_merge_code_calls(monkeypatch):
    from workbench.spec.registry import resolve

    assert all(callable(resolve(s.apply)) for s in catalog.SPARSIFIERS.values())
    assert all(callable(resolve(c.combine)) for c in catalog.CONSENSUS_RULES.values())
    for method in catalog.METHODS.values():
        assert method.sparsify in catalog.SPARSIFIERS
        assert method.consensus in catalog.CONSENSUS_RULES
    # The merge code looks a sparsifier and a consensus rule up by name: an entry added to
    # each table is merged with, and a method's settings record what its entries take.
    calls = []

    def halve(tensor, density):
        calls.append(("halve", density))
        return tensor * 0.5

    def largest(stacked, weights):
        calls.append(("largest", stacked.shape[0]))
        return stacked.abs().amax(dim=0)

    monkeypatch.setitem(
        catalog.SPARSIFIERS, "halve", catalog.Sparsifier("halve", "x / 2", halve, ("density",))
    )
    monkeypatch.setitem(
        catalog.CONSENSUS_RULES, "largest", catalog.ConsensusRule("largest", "max |x|", largest)
    )
    ts = _task_tensors(3)
    merged = tensors.merge_task_tensors(
        ts, WEIGHTS, sparsifier="halve", consensus="largest", density=0.4
    )
    assert torch.equal(merged, torch.stack([t * 0.5 for t in ts]).abs().amax(dim=0))
    assert calls == [("halve", 0.4)] * 3 + [("largest", 3)]
    with pytest.raises(ValueError, match="unknown sparsifier 'nope'; allowed: none, magnitude"):
        tensors.sparsify(ts[0], "nope")
    with pytest.raises(ValueError, match="unknown consensus rule 'nope'"):
        tensors.merge_task_tensors(ts, WEIGHTS, consensus="nope")


@pytest.mark.parametrize(
    ("method", "recorded"),
    [
        ("linear", {"merge.method", "merge.weights"}),
        ("ties", {"merge.method", "merge.weights", "merge.density", "merge.majority_sign_method"}),
        ("dare_linear", {"merge.method", "merge.weights", "merge.density", "merge.seed"}),
        ("breadcrumbs", {"merge.method", "merge.weights", "merge.density", "merge.gamma"}),
        ("adamerging", {"merge.method"}),
    ],
)
def test_a_merge_records_the_settings_its_sparsifier_and_consensus_take(method, recorded):
    settings = catalog.check_settings(method, 2, density=0.5)
    assert set(settings.as_params()) == recorded
