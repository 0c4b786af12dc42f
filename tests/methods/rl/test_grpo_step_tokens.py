"""DAPO's token mean under gradient accumulation: the normaliser is every completion token of
the optimizer step, not each micro-batch's own (TRL's ``dapo``, not its ``bnpo``)."""

from __future__ import annotations

import copy

import torch

import workbench
from tests.conftest import fast_spec
from workbench.data.encode_pairs import encode_prompts
from workbench.data.tasks import TASKS
from workbench.methods.rl import losses as rl_losses
from workbench.models import tiny
from workbench.spec import registry

# Completion length varies within every group, so every advantage is non-zero.
LENGTH = {"name": "length", "direction": "min", "source": "reward:length", "weight": 1.0}


def _module(aggregation: str):
    spec = workbench.RunSpec.parse(
        fast_spec(
            data={"source": "reverse", "train_size": 32, "eval_size": 8},
            method={
                "name": "grpo",
                "group_size": 4,
                "max_completion_length": 8,
                "aggregation": aggregation,
            },
            objectives=[LENGTH],
            train={"steps": 2, "batch_size": 2, "grad_accum": 2, "seed": 3},
        )
    )
    model, tokenizer, _ = tiny.build_or_load(spec.model.tiny, log=lambda *a: None)
    rows = TASKS["reverse"].training_rows(32, seed=3)
    encoded, _ = encode_prompts(tokenizer, rows, spec.train.max_length)
    module = registry.load_module_class("grpo")(
        spec, copy.deepcopy(model), tokenizer, encoded, None
    )
    module.rows = {"train": rows, "eval": []}
    return module


def _micro_batches(module):
    sampler = module.batch_sampler(rank=0, world_size=1, start_micro_step=0)
    return [
        module.collate([(i, module.encoded[i]) for i in rows]) for rows in list(iter(sampler))[:2]
    ]


def _gradients(module, samples_of) -> list[torch.Tensor]:
    """The accumulated gradient of one optimizer step's two micro-batches, each loss divided
    by grad_accum as the trainer does."""
    module.model.zero_grad()
    for slot, batch in enumerate(_micro_batches(module)):
        module._batch_idx = slot
        per_example, _ = module.loss_on_samples(samples_of(slot, batch))
        (per_example.mean() / 2).backward()
    return [p.grad.detach().clone() for p in module.model.parameters() if p.grad is not None]


def test_the_token_mean_divides_by_the_whole_steps_completion_tokens():
    module = _module("token")
    batches = _micro_batches(module)
    drawn = []
    for slot, batch in enumerate(batches):
        module._batch_idx = slot
        drawn.append(module._samples_for(batch))
    # Both micro-batches were sampled at the first, with the seeds each has on its own.
    alone = module._draw(batches[1], module._sample_seed(1))
    assert torch.equal(alone.batch["input_ids"], drawn[1].batch["input_ids"])
    counts = [int(s.lengths.sum()) for s in drawn]
    assert counts[0] != counts[1], counts  # else both normalisers agree and the test shows nothing
    for samples in drawn:
        assert float(samples.values["step_tokens"]) == sum(counts)

    got = _gradients(module, lambda slot, batch: drawn[slot])
    # Reference: (sum of every token loss of the step) / (the step's tokens), from unnormalised
    # sums.
    module.model.zero_grad()
    total = 0.0
    for samples in drawn:
        logp, mask = module.completion_logprobs(samples.batch)
        per_example, _ = rl_losses.grpo_loss(
            policy_logps=logp,
            old_logps=samples.values["old_logps"],
            advantages=samples.values["advantages"],
            completion_mask=mask,
            aggregation="token",
            num_tokens=1.0,
        )
        total = total + per_example.mean()  # = the micro-batch's summed token losses
    (total / sum(counts)).backward()
    expected = [p.grad.detach().clone() for p in module.model.parameters() if p.grad is not None]
    assert max(e.abs().max() for e in expected) > 1e-4
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)

    # Each micro-batch on its own count (the normaliser before) gives another gradient.
    for samples in drawn:
        del samples.values["step_tokens"]
    per_batch = _gradients(module, lambda slot, batch: drawn[slot])
    assert max((a - b).abs().max() for a, b in zip(per_batch, expected)) > 1e-6


def test_other_aggregations_sample_one_micro_batch_at_a_time():
    module = _module("sequence")
    first = _micro_batches(module)[0]
    module._batch_idx = 0
    samples = module._samples_for(first)
    assert "step_tokens" not in samples.values and list(module._kept) == [0]
