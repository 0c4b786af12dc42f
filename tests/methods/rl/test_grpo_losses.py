"""The GRPO losses against their formulas on inputs small enough to check by hand.

Two prompts with three completions each; every expected value below is written out from the
formula with math.sqrt/math.log (float64), not computed by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from workbench.methods.rl import losses as rl_losses


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def column(*values):
    return t(*values).unsqueeze(1)


EPS = 1e-4
# One reward: group 1 = (1, 2, 3): mean 2, sample std 1; group 2 = (0, 0, 6): mean 2, std sqrt(12).
# Over the batch: mean 2, squared deviations 1+0+1+4+4+16 = 26, sample std sqrt(26 / 5).
ONE_REWARD = column(1, 2, 3, 0, 0, 6)
CENTRED = [-1, 0, 1, -2, -2, 4]


@pytest.mark.parametrize(
    "scale,divisors",
    [
        ("group", [1 + EPS] * 3 + [math.sqrt(12) + EPS] * 3),
        ("batch", [math.sqrt(26 / 5) + EPS] * 6),
        ("none", [1] * 6),
    ],
)
def test_advantages_are_centred_on_the_group_and_scaled_as_asked(scale, divisors):
    advantages, metrics = rl_losses.group_advantages(ONE_REWARD, [1.0], 3, scale=scale)
    expected = t(*[c / d for c, d in zip(CENTRED, divisors, strict=True)])
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(metrics["total"], t(1, 2, 3, 0, 0, 6))
    torch.testing.assert_close(metrics["group_std"], t(*[1.0] * 3, *[math.sqrt(12)] * 3))


def test_weights_combine_rewards_before_normalising():
    # T = 2 r1 + 0.5 r2: group 1 = (2, 1, 4) from r1 = (1, 0, 1), r2 = (0, 2, 4).
    rewards = t([1, 0], [0, 2], [1, 4])
    advantages, metrics = rl_losses.group_advantages(rewards, [2.0, 0.5], 3, scale="none")
    torch.testing.assert_close(metrics["total"], t(2, 1, 4))
    torch.testing.assert_close(advantages, t(2 - 7 / 3, 1 - 7 / 3, 4 - 7 / 3))


def test_normalize_then_sum_standardises_each_reward_in_its_group_then_the_sum_over_the_batch():
    # r1 = (1, 0, 1 | 0, 0, 1): deviations (1/3, -2/3, 1/3), std 1/sqrt(3) -> z1 = (a, -2a, a),
    # a = 1/sqrt(3); group 2 -> (-a, -a, 2a).  r2 = (1, 2, 3 | 3, 2, 1): z2 = (-1, 0, 1 | 1, 0, -1).
    # S = z1 + z2 has batch mean 0 and squared sum 12a^2 - 6a + 4 = 8 - 2 sqrt(3).
    rewards = t([1, 1], [0, 2], [1, 3], [0, 3], [0, 2], [1, 1])
    a = 1 / math.sqrt(3)
    summed = [a - 1, -2 * a, a + 1, 1 - a, -a, 2 * a - 1]
    std = math.sqrt((8 - 2 * math.sqrt(3)) / 5)
    advantages, _ = rl_losses.group_advantages(
        rewards, [1.0, 1.0], 3, combine="normalize_then_sum", eps=0.0
    )
    torch.testing.assert_close(advantages, t(*[s / std for s in summed]), rtol=1e-12, atol=1e-15)


def test_normalize_then_sum_keeps_a_reward_in_1000x_units_from_dominating():
    correct = t(1, 0, 1, 0, 0, 1)
    length = t(1, 2, 3, 3, 2, 1)
    small, large = torch.stack([correct, length], 1), torch.stack([correct, 1000 * length], 1)
    length_only = torch.stack([0 * correct, length], 1)

    def advantages(rewards, combine):
        return rl_losses.group_advantages(rewards, [1.0, 1.0], 3, combine=combine)[0]

    # Summed first: the large reward decides alone, and the first completion (correct, short)
    # gets the negative advantage its length alone gives it.
    dominated = advantages(large, "sum_then_normalize")
    torch.testing.assert_close(
        dominated, advantages(length_only, "sum_then_normalize"), rtol=0, atol=2e-3
    )
    assert (dominated - advantages(small, "sum_then_normalize")).abs().max() > 0.3
    # Normalised first: the reward's units do not matter, both rewards count.
    balanced = advantages(large, "normalize_then_sum")
    torch.testing.assert_close(balanced, advantages(small, "normalize_then_sum"), rtol=0, atol=1e-3)
    assert (balanced - advantages(length_only, "normalize_then_sum")).abs().max() > 0.3


def test_groups_whose_completions_all_score_the_same_and_one_completion_groups_get_zero_advantage():
    advantages, metrics = rl_losses.group_advantages(column(5, 5, 5, 1, 2, 3), [1.0], 3)
    assert (
        advantages[:3].tolist() == [0.0, 0.0, 0.0]
        and metrics["group_std"][:3].tolist() == [0.0] * 3
    )
    single, _ = rl_losses.group_advantages(column(1, 2), [1.0], 1)
    assert single.tolist() == [0.0, 0.0]


def _one_token(policy, old, advantages, **options):
    """A batch of one-token completions; returns (per_example, metrics, d sum / d policy)."""
    leaf = t(*policy).unsqueeze(1).requires_grad_()
    per_example, metrics = rl_losses.grpo_loss(
        policy_logps=leaf,
        old_logps=t(*old).unsqueeze(1),
        advantages=t(*advantages),
        completion_mask=torch.ones_like(leaf),
        **options,
    )
    per_example.sum().backward()
    return per_example.detach(), metrics, leaf.grad.squeeze(1)


def test_clipping_binds_only_where_the_advantage_sign_says():
    # Ratios 1.5, 0.5, 0.5, 1.5, 0.5 against advantages +1, +1, -1, -1, 0, eps 0.2:
    # -min(rA, clip(r)A) = -min(1.5, 1.2), -min(0.5, 0.8), -min(-0.5, -0.8), -min(-1.5, -1.2), 0.
    ratios = [1.5, 0.5, 0.5, 1.5, 0.5]
    per_example, metrics, grad = _one_token(
        [math.log(r) for r in ratios], [0.0] * 5, [1, 1, -1, -1, 0], epsilon_low=0.2
    )
    torch.testing.assert_close(per_example, t(-1.2, -0.5, 0.8, 1.5, 0.0))
    # d(-r A)/d log pi = -r A where not clipped; 0 where the clip holds r fixed.
    torch.testing.assert_close(grad, t(0.0, -0.5, 0.0, 1.5, 0.0))
    # One token clipped on each side; a zero advantage has nothing to clip.
    assert float(metrics["clip_ratio_high"]) == 0.2 and float(metrics["clip_ratio_low"]) == 0.2
    assert float(metrics["clip_ratio"]) == 0.4
    assert float(metrics["ratio"]) == pytest.approx(0.9)


def test_epsilon_high_widens_only_the_upper_clip_and_defaults_to_epsilon_low():
    up, down = math.log(1.25), math.log(0.75)
    symmetric, metrics, _ = _one_token([up, down], [0.0, 0.0], [1, -1], epsilon_low=0.2)
    torch.testing.assert_close(symmetric, t(-1.2, 0.8))  # both clipped at 1 -+ 0.2
    assert float(metrics["clip_ratio"]) == 1.0
    higher, metrics, _ = _one_token(
        [up, down], [0.0, 0.0], [1, -1], epsilon_low=0.2, epsilon_high=0.3
    )
    torch.testing.assert_close(higher, t(-1.25, 0.8))  # 1.25 < 1.3: no longer clipped
    assert float(metrics["clip_ratio_high"]) == 0.0 and float(metrics["clip_ratio_low"]) == 0.5


def test_kl_penalty_is_beta_times_k3_and_its_gradient():
    # q = log pi_ref - log pi = log 2: k3 = 2 - log 2 - 1; dk3/dlog pi = 1 - e^q = -1.
    # A = 0: no surrogate.
    per_example, metrics, grad = _one_token(
        [-1.0], [-1.0], [0.0], ref_logps=t(-1.0 + math.log(2)).unsqueeze(1), beta=0.5
    )
    assert float(per_example) == pytest.approx(0.5 * (1 - math.log(2)))
    assert float(metrics["kl"]) == pytest.approx(1 - math.log(2))
    assert float(grad) == pytest.approx(-0.5)
    # Weighted by the ratio r = e^(log pi - log pi_old) = e^0.5: k3 r, gradient (k3 + 1 - e^q) r.
    per_example, metrics, grad = _one_token(
        [-0.5],
        [-1.0],
        [0.0],
        ref_logps=t(-0.5 + math.log(2)).unsqueeze(1),
        beta=1.0,
        kl_importance_weighted=True,
    )
    r = math.exp(0.5)
    assert float(per_example) == pytest.approx((1 - math.log(2)) * r)
    assert float(grad) == pytest.approx((1 - math.log(2) - 1) * r)


# Two completions of 1 and 3 tokens, every ratio 1 and advantage 1: each token's loss is -1.
MASK = t([1, 0, 0, 0], [1, 1, 1, 0])


def _aggregated(aggregation, mask=MASK, **options):
    leaf = torch.zeros_like(mask).requires_grad_()
    per_example, _ = rl_losses.grpo_loss(
        policy_logps=leaf,
        old_logps=torch.zeros_like(mask),
        advantages=t(1, 1),
        completion_mask=mask,
        aggregation=aggregation,
        **options,
    )
    per_example.mean().backward()
    return per_example.detach(), leaf.grad


def test_sequence_token_and_dr_grpo_aggregations():
    sequence, grad = _aggregated("sequence")  # (1/2)(-1/1 - 3/3)
    torch.testing.assert_close(sequence, t(-1, -1))
    torch.testing.assert_close(
        grad, -MASK / t(2 * 1, 2 * 3).unsqueeze(1)
    )  # a short completion's tokens weigh more
    token, grad = _aggregated("token")  # -4 tokens / 4
    assert float(token.mean()) == -1.0
    torch.testing.assert_close(token, t(-2 * 1 / 4, -2 * 3 / 4))
    torch.testing.assert_close(grad, -MASK / 4)  # every token alike
    dr_grpo, grad = _aggregated("dr_grpo", max_completion_length=8)  # -4 / (2 * 8)
    assert float(dr_grpo.mean()) == -4 / 16
    torch.testing.assert_close(grad, -MASK / 16)
    # DAPO over several micro-batches: the step's token count replaces the batch's.
    token, _ = _aggregated("token", num_tokens=10)
    assert float(token.mean()) == -4 / 10


def test_dr_grpo_normaliser_depends_on_neither_lengths_nor_padding():
    padded = torch.cat([MASK, torch.zeros(2, 6, dtype=torch.float64)], dim=1)
    longer = t([1, 1, 1, 0], [1, 1, 1, 0])
    base, grad = _aggregated("dr_grpo", max_completion_length=8)
    again, grad_padded = _aggregated("dr_grpo", mask=padded, max_completion_length=8)
    torch.testing.assert_close(again, base)
    torch.testing.assert_close(grad_padded[:, :4], grad)
    longer_loss, longer_grad = _aggregated("dr_grpo", mask=longer, max_completion_length=8)
    assert float(longer_loss.mean()) == -6 / 16  # two more tokens, same normaliser
    torch.testing.assert_close(longer_grad[longer == 1], grad[MASK == 1][:1].expand(6))
    # Without max_completion_length the constant is the mask's width T.
    assert float(_aggregated("dr_grpo")[0].mean()) == -4 / (2 * 4)


@pytest.mark.parametrize("aggregation", ["sequence", "token", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_per_example_mean_is_the_aggregated_batch_loss(aggregation, beta):
    generator = torch.Generator().manual_seed(1)
    n, width = 5, 6
    policy = -torch.rand(n, width, generator=generator, dtype=torch.float64) * 2
    old = policy + 0.4 * torch.randn(n, width, generator=generator, dtype=torch.float64)
    ref = policy + 0.4 * torch.randn(n, width, generator=generator, dtype=torch.float64)
    advantages = torch.randn(n, generator=generator, dtype=torch.float64)
    mask = (torch.arange(width) < t(1, 6, 3, 2, 5).unsqueeze(1)).double()
    per_example, _ = rl_losses.grpo_loss(
        policy_logps=policy,
        old_logps=old,
        advantages=advantages,
        completion_mask=mask,
        ref_logps=ref,
        beta=beta,
        aggregation=aggregation,
    )
    # The formula token by token, in plain Python.
    batch_sum, sequence_means = 0.0, []
    for i in range(n):
        row = 0.0
        for j in range(int(mask[i].sum())):
            r, a = math.exp(policy[i, j] - old[i, j]), float(advantages[i])
            q = float(ref[i, j] - policy[i, j])
            row += -min(r * a, min(max(r, 0.8), 1.2) * a) + beta * (math.exp(q) - q - 1)
        batch_sum += row
        sequence_means.append(row / float(mask[i].sum()))
    expected = {
        "sequence": sum(sequence_means) / n,
        "token": batch_sum / float(mask.sum()),
        "dr_grpo": batch_sum / (n * width),
    }[aggregation]
    assert float(per_example.mean()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: rl_losses.group_advantages(ONE_REWARD, [1.0], 3, scale="std"),
            "scale must be one of 'group', 'batch', 'none'",
        ),
        (
            lambda: rl_losses.group_advantages(ONE_REWARD, [1.0], 3, combine="mean"),
            "combine must be one of",
        ),
        (
            lambda: rl_losses.group_advantages(ONE_REWARD, [1.0], 4),
            "does not split into groups of group_size=4",
        ),
        (lambda: rl_losses.group_advantages(ONE_REWARD, [-1.0], 3), "weights must be >= 0"),
        (
            lambda: rl_losses.group_advantages(ONE_REWARD, [1.0, 1.0], 3),
            "one value per reward column",
        ),
        (
            lambda: rl_losses.group_advantages(t(1, 2, 3), [1.0], 3),
            "rewards must have shape (N, R)",
        ),
        (
            lambda: rl_losses.group_advantages(column(1, float("nan"), 3), [1.0], 3),
            "NaN or infinity",
        ),
        (lambda: _aggregated("mean"), "aggregation must be one of 'sequence', 'token', 'dr_grpo'"),
        (lambda: _aggregated("sequence", beta=0.1), "pass ref_logps, or set beta=0"),
        (lambda: _aggregated("sequence", epsilon_low=1.5), "0 <= epsilon_low < 1"),
        (
            lambda: _aggregated("dr_grpo", max_completion_length=0),
            "max_completion_length must be a positive count",
        ),
        (
            lambda: rl_losses.grpo_loss(
                policy_logps=MASK, old_logps=MASK[:1], advantages=t(1, 1), completion_mask=MASK
            ),
            "old_logps must have the shape of policy_logps",
        ),
        (
            lambda: rl_losses.grpo_loss(
                policy_logps=MASK, old_logps=MASK, advantages=t(1, 1, 1), completion_mask=MASK
            ),
            "advantages must have shape (2,)",
        ),
    ],
)
def test_bad_arguments_fail_with_one_line_naming_the_problem(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
