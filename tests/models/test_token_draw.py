"""Drawing the next token by the inverse of its CDF: the distribution sampling would draw
from (the warped softmax), reproducible under a seed, inside ``generate``."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tests.kernels.test_model_families import build
from workbench.models.token_draw import draw_tokens, sampling_processors

DRAWS = 200_000


def frequencies(scores: torch.Tensor) -> torch.Tensor:
    """How often each token of the one-row ``scores`` is drawn over DRAWS draws."""
    torch.manual_seed(0)
    tokens = draw_tokens(scores.expand(DRAWS, -1)).squeeze(1)
    return torch.bincount(tokens, minlength=scores.shape[-1]).double() / DRAWS


def assert_matches(freq: torch.Tensor, probs: torch.Tensor) -> None:
    """Within 5 standard errors of each probability; impossible tokens never drawn."""
    error = (probs * (1 - probs) / DRAWS).sqrt()
    assert bool(((freq - probs).abs() <= 5 * error + 1e-12).all()), (freq, probs)
    assert bool((freq[probs == 0] == 0).all())


def test_draws_follow_the_softmax_and_never_an_impossible_token():
    scores = torch.tensor([[2.0, 1.0, 0.0, float("-inf"), -1.0, 3.0, -6.0]])
    assert_matches(frequencies(scores), torch.softmax(scores.double(), dim=-1)[0])


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (1.0, 3, 1.0), (1.3, 0, 0.8), (0.9, 4, 0.9)]
)
def test_the_processors_warp_as_sampling_does_then_draw(temperature, top_k, top_p):
    """The scores reaching the draw are what transformers' own warpers give (temperature,
    then top-k, then top-p), and the draws follow their softmax."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(1, 10, generator=gen) * 2
    ids = torch.zeros(1, 1, dtype=torch.long)
    ours = sampling_processors(temperature, top_k, top_p)
    expected = LogitsProcessorList()
    if temperature != 1.0:
        expected.append(TemperatureLogitsWarper(temperature))
    if top_k:
        expected.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        expected.append(TopPLogitsWarper(top_p))
    warped = expected(ids, scores.clone())
    assert torch.equal(LogitsProcessorList(ours[:-1])(ids, scores.clone()), warped)
    assert_matches(frequencies(warped), torch.softmax(warped.double(), dim=-1)[0])
    drawn = ours(ids, scores.clone())
    assert int((drawn == 0).sum()) == 1 and bool(torch.isinf(drawn).sum() == 9)


def test_a_large_vocabulary_draws_its_tail():
    """49,152 entries: float64 running sums reach the smallest probabilities; the draw's
    frequency of a band of rare tokens matches their total probability."""
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(1, 49_152, generator=gen) * 2
    probs = torch.softmax(scores.double(), dim=-1)[0]
    torch.manual_seed(0)
    tokens = torch.cat([draw_tokens(scores.expand(256, -1)).squeeze(1) for _ in range(40)])
    rare = probs < probs.quantile(0.5)  # the less likely half of the vocabulary
    share, expected = rare[tokens].double().mean(), probs[rare].sum()
    error = float((expected * (1 - expected) / len(tokens)).sqrt())
    assert abs(float(share - expected)) <= 5 * error


def test_a_seeded_generation_is_reproducible_and_the_seed_matters():
    model = build("llama").eval()
    ids = torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]])

    def sample(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=(ids != 0).long(),
                do_sample=False,
                logits_processor=sampling_processors(1.0, 0, 1.0),
                max_new_tokens=12,
                min_new_tokens=12,
                pad_token_id=0,
            )

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))
