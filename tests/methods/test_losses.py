"""Losses against naive float64 references: explicit loops over examples and positions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.data.encode import IGNORE_INDEX, SEGMENT_IDS
from workbench.methods.sft.losses import (
    brevity_loss,
    scalarise,
    segment_nll,
    sft_loss,
    token_logprobs,
)

# --------------------------------------------------------------------------- references


def ref_logprob(logits, b: int, t: int, token: int) -> float:
    row = [float(x) for x in logits[b, t]]
    m = max(row)
    return row[token] - (m + math.log(sum(math.exp(x - m) for x in row)))


def ref_token_logprobs(logits, labels):
    B, T = labels.shape
    logp = [[0.0] * (T - 1) for _ in range(B)]
    mask = [[False] * (T - 1) for _ in range(B)]
    for b in range(B):
        for t in range(T - 1):
            target = int(labels[b, t + 1])
            if target != IGNORE_INDEX:
                logp[b][t] = ref_logprob(logits, b, t, target)
                mask[b][t] = True
    return logp, mask


def ref_masked_nll(logits, labels, keep=lambda b, t: True):
    """Mean -log p over label positions t (scored by logits at t-1) where keep(b, t)."""
    B, T = labels.shape
    out = []
    for b in range(B):
        total, count = 0.0, 0
        for t in range(1, T):
            target = int(labels[b, t])
            if target == IGNORE_INDEX or not keep(b, t):
                continue
            total -= ref_logprob(logits, b, t - 1, target)
            count += 1
        out.append(total / count if count else 0.0)
    return out


def ref_brevity(logits, labels, eos_id: int, scale: float):
    B, T = labels.shape
    out = []
    for b in range(B):
        positions = [t for t in range(1, T) if int(labels[b, t]) != IGNORE_INDEX]
        n = len(positions)
        total = 0.0
        for k, t in enumerate(positions):  # k-th completion position, k = 0..n-1
            total += scale * (k / n) * -ref_logprob(logits, b, t - 1, eos_id)
        out.append(total / n if n else 0.0)
    return out


# --------------------------------------------------------------------------- inputs


def random_batch(seed: int, B=4, T=9, V=11, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=gen)
    keep = torch.rand(B, T, generator=gen) < 0.6
    labels = labels.masked_fill(~keep, IGNORE_INDEX)
    labels[0] = IGNORE_INDEX  # a row with no completion token
    labels[1, 1:] = labels[1, 1:].clamp(min=0)  # a fully labelled row
    labels[2, :] = IGNORE_INDEX
    labels[2, 0] = 3  # label at position 0 is never scored (nothing predicts it)
    segments = torch.randint(0, 3, (B, T), generator=gen)
    return logits, labels, segments


SEEDS = range(6)


def close(actual: torch.Tensor, expected: list, tol=1e-5):
    assert actual.shape == (len(expected),)
    torch.testing.assert_close(
        actual.double(), torch.tensor(expected, dtype=torch.float64), rtol=tol, atol=tol
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_token_logprobs(seed):
    logits, labels, _ = random_batch(seed)
    logp, mask = token_logprobs(logits, labels)
    ref_logp, ref_mask = ref_token_logprobs(logits.double(), labels)
    assert mask.tolist() == ref_mask
    torch.testing.assert_close(
        logp.double(), torch.tensor(ref_logp, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_sft_loss(seed):
    logits, labels, _ = random_batch(seed)
    loss, metrics = sft_loss(logits, labels)
    close(loss, ref_masked_nll(logits.double(), labels))
    assert loss[0] == 0 and loss[2] == 0
    expected_tokens = sum(
        int(labels[b, t]) != IGNORE_INDEX
        for b in range(labels.shape[0])
        for t in range(1, labels.shape[1])
    )
    assert metrics["tokens"].item() == expected_tokens


@pytest.mark.parametrize("seed", SEEDS)
def test_sft_loss_matches_cross_entropy(seed):
    logits, labels, _ = random_batch(seed)
    loss, _ = sft_loss(logits, labels)
    for b in range(labels.shape[0]):
        shifted = labels[b, 1:]
        if (shifted == IGNORE_INDEX).all():
            assert loss[b].item() == 0.0
            continue
        ce = F.cross_entropy(logits[b, :-1], shifted, ignore_index=IGNORE_INDEX, reduction="mean")
        torch.testing.assert_close(loss[b], ce, rtol=1e-6, atol=1e-6)


def test_sft_loss_float64_stays_float64():
    logits, labels, _ = random_batch(0, dtype=torch.float64)
    loss, _ = sft_loss(logits, labels)
    assert loss.dtype == torch.float64
    close(loss, ref_masked_nll(logits, labels), tol=1e-12)


def test_sft_loss_upcasts_bfloat16():
    logits, labels, _ = random_batch(1, dtype=torch.bfloat16)
    loss, _ = sft_loss(logits, labels)
    assert loss.dtype == torch.float32
    # The reference sees the same (rounded) bf16 values, so only fp32 rounding separates them.
    close(loss, ref_masked_nll(logits.double(), labels))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("segment", ["answer", "explanation", "prompt"])
def test_segment_nll(seed, segment):
    logits, labels, segments = random_batch(seed)
    sid = SEGMENT_IDS[segment]
    got = segment_nll(logits, labels, segments, segment)
    close(
        got, ref_masked_nll(logits.double(), labels, keep=lambda b, t: int(segments[b, t]) == sid)
    )


def test_segments_partition_the_completion():
    # Token-count-weighted segment means add back up to the completion mean.
    logits, labels, segments = random_batch(7)
    segments = segments.clamp(min=1)  # only answer (1) and explanation (2)
    total, _ = sft_loss(logits, labels)
    scored = labels[:, 1:] != IGNORE_INDEX
    parts = torch.zeros_like(total)
    for name in ("answer", "explanation"):
        count = (scored & (segments[:, 1:] == SEGMENT_IDS[name])).sum(1)
        parts += segment_nll(logits, labels, segments, name) * count
    torch.testing.assert_close(parts / scored.sum(1).clamp(min=1), total)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [3.0, 1.0, 0.5])
def test_brevity_loss(seed, scale):
    logits, labels, _ = random_batch(seed)
    eos = seed % logits.shape[-1]
    got = brevity_loss(logits, labels, eos, position_scale=scale)
    close(got, ref_brevity(logits.double(), labels, eos, scale))
    assert got[0] == 0 and got[2] == 0


def test_brevity_loss_first_position_is_free():
    # With a single completion token the weight is 0/1: nothing pushes it to stop.
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX]])
    assert brevity_loss(logits, labels, eos_id=4).item() == 0.0


# --------------------------------------------------------------------------- gradients


def tiny_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(
        [
            [IGNORE_INDEX, IGNORE_INDEX, 1, 3, 0],
            [IGNORE_INDEX, 2, 2, IGNORE_INDEX, 1],
            [IGNORE_INDEX] * 5,
        ]
    )
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_sft_loss_gradcheck(seed):
    logits, labels = tiny_inputs(seed)
    assert torch.autograd.gradcheck(lambda x: sft_loss(x, labels)[0], (logits,))


@pytest.mark.parametrize("seed", [0, 1])
def test_brevity_loss_gradcheck(seed):
    logits, labels = tiny_inputs(seed)
    assert torch.autograd.gradcheck(lambda x: brevity_loss(x, labels, eos_id=3), (logits,))


def test_sft_gradient_only_touches_scored_positions():
    logits, labels = tiny_inputs(2)
    sft_loss(logits, labels)[0].sum().backward()
    grad_nonzero = logits.grad.abs().sum(-1) > 0
    scored = torch.zeros_like(grad_nonzero)
    scored[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    assert torch.equal(grad_nonzero, scored)


# --------------------------------------------------------------------------- scalarise


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 1.0, "b": 1.0, "c": 1.0},
        {"a": 0.5, "b": 0.0, "c": 2.0},
        {"a": 3.0},
        {"a": 0.1, "b": 0.7, "c": 0.2},
    ],
)
def test_scalarise(weights):
    gen = torch.Generator().manual_seed(0)
    terms = {k: torch.rand(5, generator=gen, dtype=torch.float64) for k in "abc"}
    got = scalarise(terms, weights)
    total = sum(weights.values())
    for i in range(5):
        expected = sum(w * float(terms[k][i]) for k, w in weights.items()) / total
        assert got[i].item() == pytest.approx(expected, rel=1e-12)


def test_scalarise_is_invariant_to_weight_scale():
    terms = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([4.0, -1.0])}
    torch.testing.assert_close(
        scalarise(terms, {"a": 1, "b": 3}), scalarise(terms, {"a": 10, "b": 30})
    )


def test_scalarise_zero_weight_term_may_be_missing():
    terms = {"a": torch.tensor([1.0, 2.0])}
    torch.testing.assert_close(scalarise(terms, {"a": 2.0, "b": 0.0}), terms["a"])


@pytest.mark.parametrize("weights", [{"a": 0.0, "b": 0.0}, {}])
def test_scalarise_rejects_all_zero_weights(weights):
    with pytest.raises(ValueError, match="positive"):
        scalarise({"a": torch.ones(2), "b": torch.ones(2)}, weights)


def test_scalarise_gradient_flows_with_weights():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0, 4.0], requires_grad=True)
    scalarise({"a": a, "b": b}, {"a": 1.0, "b": 3.0}).sum().backward()
    torch.testing.assert_close(a.grad, torch.full((2,), 0.25))
    torch.testing.assert_close(b.grad, torch.full((2,), 0.75))
