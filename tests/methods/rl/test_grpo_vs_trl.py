"""The GRPO losses against TRL's GRPOTrainer, fed the same rewards and per-token log-probs.

One real GRPOTrainer is built on the fast tiny base for the module. Its advantages come from
its own ``_generate_and_score_completions`` with generation and reward scoring stubbed to
return fixed completions and fixed float64 rewards; its loss from its own ``_compute_loss``
with the per-token log-prob function stubbed to return a float64 leaf tensor, so both sides
see identical numbers and the gradients compared are w.r.t. those log-probs. Everything is in
float64, so values and gradients agree to rounding (rtol 1e-9), except TRL's advantages:
its ``nanstd`` divides two integer counts for Bessel's factor n / (n - 1), which torch does in
float32, so its stds carry a float32 rounding (relative 3e-8; ADVANTAGE_RTOL); and its logged
token means (clip ratios, KL), which it sums and counts in float32 (METRIC_RTOL).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.conftest import fast_spec
from workbench.methods.rl import losses as rl_losses
from workbench.spec.run_spec import RunSpec

# TRL's generation path asks transformers a deprecated gradient-checkpointing question.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*checkpointing.*:FutureWarning"),
]
trl = pytest.importorskip("trl")

PROMPTS, GROUP_SIZE, WIDTH = 3, 4, 7
N = PROMPTS * GROUP_SIZE
RTOL = 1e-9
ADVANTAGE_RTOL = 1e-7
METRIC_RTOL = 1e-6
# Our aggregation name -> TRL's loss_types that compute it on one batch (TRL's dapo divides
# by the tokens of the whole generation batch, which is this batch here).
AGGREGATIONS = {"sequence": ["grpo"], "token": ["bnpo", "dapo"], "dr_grpo": ["dr_grpo"]}


def _rewards() -> torch.Tensor:
    """(N, 2): a 0/1 correctness and a length penalty in units 40x larger; the last prompt's
    four completions score the same on both (a zero-std group)."""
    correct = torch.tensor([1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=torch.float64)
    length = torch.tensor(
        [-12, -40, -3, -25, -8, -30, -30, -16, -20, -20, -20, -20], dtype=torch.float64
    )
    return torch.stack([correct, length], dim=1)


WEIGHTS = [1.0, 0.25]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A GRPOTrainer (two reward functions, groups of 4, batch 12) whose generation,
    scoring and log-prob computation are replaced by stubs returning fixed tensors."""
    from datasets import Dataset

    from workbench.models import tiny

    model, tokenizer, _ = tiny.build_or_load(
        RunSpec.parse(fast_spec()).model.tiny, log=lambda *a: None
    )
    config = trl.GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")),
        bf16=False,
        use_cpu=True,
        report_to="none",
        dataloader_pin_memory=False,
        per_device_train_batch_size=N,
        num_generations=GROUP_SIZE,
        max_completion_length=WIDTH,
        gradient_accumulation_steps=1,
        beta=0.0,
        seed=0,
    )

    def unused_reward(completions, **kwargs):  # scoring is stubbed below; TRL needs the functions
        raise AssertionError("the stubbed scoring should have been used")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grpo = trl.GRPOTrainer(
            model=model,
            reward_funcs=[unused_reward, unused_reward],
            args=config,
            train_dataset=Dataset.from_list([{"prompt": "1 2 3"}] * N),
            processing_class=tokenizer,
        )
    grpo.current_gradient_accumulation_steps = 1
    return grpo


def _trl_advantages(trainer, rewards, weights, scale, combine):
    lengths = [1 + i % WIDTH for i in range(N)]
    trainer._generate = lambda prompts: (
        [[5, 6]] * N,
        [[7] * n for n in lengths],
        None,
        ["x"] * N,
        None,
        {},
        None,
        None,
    )
    trainer._calculate_rewards = lambda *args: rewards.clone()
    trainer.reward_weights = torch.tensor(weights, dtype=torch.float64)
    trainer.scale_rewards, trainer.multi_objective_aggregation = scale, combine
    return trainer._generate_and_score_completions([{"prompt": "1 2 3"}] * N)["advantages"]


@pytest.mark.parametrize(
    "combine,scale",
    [
        ("sum_then_normalize", "group"),
        ("sum_then_normalize", "batch"),
        ("sum_then_normalize", "none"),
        ("normalize_then_sum", "group"),
    ],
)
def test_advantages_equal_trls(trainer, combine, scale):
    ours, metrics = rl_losses.group_advantages(
        _rewards(), WEIGHTS, GROUP_SIZE, scale=scale, combine=combine
    )
    theirs = _trl_advantages(trainer, _rewards(), WEIGHTS, scale, combine)
    assert theirs.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, rtol=ADVANTAGE_RTOL, atol=1e-12)
    assert ours.abs().max() > 0.5  # not a comparison of zeros
    # The zero-std group teaches nothing (normalize_then_sum's batch mean leaves rounding).
    assert float(metrics["group_std"][-1]) == 0.0 and float(ours[-GROUP_SIZE:].abs().max()) < 1e-12


@pytest.mark.parametrize("trl_scale", ["batch", "none"])
def test_trl_ignores_scale_rewards_under_normalize_then_sum_which_is_our_group_scale(
    trainer, trl_scale
):
    ours, _ = rl_losses.group_advantages(
        _rewards(), WEIGHTS, GROUP_SIZE, scale="group", combine="normalize_then_sum"
    )
    theirs = _trl_advantages(trainer, _rewards(), WEIGHTS, trl_scale, "normalize_then_sum")
    torch.testing.assert_close(ours, theirs, rtol=ADVANTAGE_RTOL, atol=1e-12)


def _logps():
    """Per-token log-probs whose importance ratios reach well past 1 +- 0.28, a reference
    apart from the policy, and completions of 1..WIDTH tokens."""
    generator = torch.Generator().manual_seed(0)
    policy = -torch.rand(N, WIDTH, generator=generator, dtype=torch.float64) * 3 - 0.05
    old = policy + 0.5 * torch.randn(N, WIDTH, generator=generator, dtype=torch.float64)
    ref = policy + 0.3 * torch.randn(N, WIDTH, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([1 + (5 * i) % WIDTH for i in range(N)])
    mask = (torch.arange(WIDTH) < lengths.unsqueeze(1)).long()
    return policy, old, ref, mask


def _trl_loss(
    trainer,
    loss_type,
    policy,
    old,
    ref,
    mask,
    advantages,
    beta,
    kl_weighted,
    eps_low,
    eps_high,
    max_length,
):
    leaf = policy.clone().requires_grad_()
    trainer.args.use_bias_correction_kl = kl_weighted
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (
        leaf,
        torch.zeros_like(policy),
        None,
    )
    trainer.loss_type, trainer.beta = loss_type, beta
    trainer.epsilon_low, trainer.epsilon_high, trainer.max_completion_length = (
        eps_low,
        eps_high,
        max_length,
    )
    trainer._metrics["train"].clear()
    inputs = {
        "prompt_ids": torch.full((N, 2), 5),
        "prompt_mask": torch.ones(N, 2, dtype=torch.long),
        "completion_ids": torch.full((N, WIDTH), 7),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return (
        loss.detach(),
        leaf.grad,
        {name: values[-1] for name, values in trainer._metrics["train"].items()},
    )


# beta > 0 with k3 as the GRPO paper has it, and weighted by the ratio (TRL's default).
@pytest.mark.parametrize("beta,kl_weighted", [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize(
    "aggregation,loss_type",
    [(ours, theirs) for ours, names in AGGREGATIONS.items() for theirs in names],
)
def test_loss_and_gradient_equal_trls(trainer, aggregation, loss_type, beta, kl_weighted):
    policy, old, ref, mask = _logps()
    advantages, _ = rl_losses.group_advantages(_rewards(), WEIGHTS, GROUP_SIZE)
    eps_low, eps_high, max_length = (
        0.2,
        0.28,
        WIDTH + 3,
    )  # Dr. GRPO's constant is not the batch's width
    leaf = policy.clone().requires_grad_()
    per_example, metrics = rl_losses.grpo_loss(
        policy_logps=leaf,
        old_logps=old,
        advantages=advantages,
        completion_mask=mask,
        ref_logps=ref,
        beta=beta,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        aggregation=aggregation,
        max_completion_length=max_length,
        kl_importance_weighted=kl_weighted,
    )
    loss = per_example.mean()
    loss.backward()
    trl_loss, trl_grad, trl_metrics = _trl_loss(
        trainer,
        loss_type,
        policy,
        old,
        ref,
        mask,
        advantages,
        beta,
        kl_weighted,
        eps_low,
        eps_high,
        max_length,
    )
    torch.testing.assert_close(loss.detach(), trl_loss, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(leaf.grad, trl_grad, rtol=RTOL, atol=1e-12)
    assert leaf.grad.abs().max() > 1e-3
    assert metrics["clip_ratio_low"] > 0.05 and metrics["clip_ratio_high"] > 0.05  # both sides clip
    assert float(metrics["clip_ratio"]) == pytest.approx(
        trl_metrics["clip_ratio/region_mean"], rel=METRIC_RTOL
    )
    assert float(metrics["clip_ratio_low"]) == pytest.approx(
        trl_metrics["clip_ratio/low_mean"], rel=METRIC_RTOL
    )
    assert float(metrics["clip_ratio_high"]) == pytest.approx(
        trl_metrics["clip_ratio/high_mean"], rel=METRIC_RTOL
    )
    if beta:
        assert float(metrics["kl"]) == pytest.approx(trl_metrics["kl"], rel=METRIC_RTOL)
