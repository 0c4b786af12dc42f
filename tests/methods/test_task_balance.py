"""SFT's task balance (MFTCoder): each task of a mixture counts equally, by its token mean
(``tokens``) or its rows' mean (``examples``); checked in float64 against the formula
computed by hand, row by row."""

from __future__ import annotations

import pytest
import torch

from workbench.data.encode import task_groups
from workbench.methods.sft.losses import masked_mean_nll, task_balanced_nll


def by_hand(logp, mask, tasks, balance):
    """L from its definition, with Python loops over tasks, rows and tokens."""
    names = sorted(set(tasks))
    task_losses = []
    for name in names:
        rows = [i for i, t in enumerate(tasks) if t == name]
        sums = [-sum(float(logp[i, k]) for k in range(logp.shape[1]) if mask[i, k]) for i in rows]
        counts = [int(mask[i].sum()) for i in rows]
        if balance == "tokens":
            task_losses.append(sum(sums) / sum(counts))
        else:
            task_losses.append(sum(s / n for s, n in zip(sums, counts)) / len(rows))
    return sum(task_losses) / len(names)


@pytest.mark.parametrize("balance", ["tokens", "examples"])
def test_each_task_counts_equally(balance):
    generator = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 9, generator=generator, dtype=torch.float64) * 3
    lengths = torch.tensor([2, 9, 5, 1, 7, 3])  # rows of very different lengths
    mask = torch.arange(9)[None, :] < lengths[:, None]
    tasks = ["sort", "reverse", "sort", "order", "sort", "reverse"]
    per_example = task_balanced_nll(logp, mask, task_groups(tasks), balance)
    assert per_example.dtype == torch.float64 and per_example.shape == (6,)
    # The module's batch mean of the per-example values is the balanced loss.
    assert float(per_example.mean()) == pytest.approx(
        by_hand(logp, mask, tasks, balance), rel=1e-12
    )
    # One task alone: tokens is the token mean, examples the plain SFT loss.
    alone = task_balanced_nll(logp, mask, task_groups(["sort"] * 6), balance)
    expected = -(logp * mask).sum() / mask.sum() if balance == "tokens" else None
    if expected is None:
        expected = masked_mean_nll(logp, mask).mean()
    assert float(alone.mean()) == pytest.approx(float(expected), rel=1e-12)


def test_balancing_moves_weight_from_a_large_task_to_a_small_one():
    # Three rows of task a, one of b: unbalanced, b carries a quarter; balanced, a half.
    logp = torch.full((4, 3), -1.0, dtype=torch.float64)
    logp[3] = -5.0
    mask = torch.ones(4, 3, dtype=torch.bool)
    groups = task_groups(["a", "a", "a", "b"])
    assert float(task_balanced_nll(logp, mask, groups, "none").mean()) == pytest.approx(2.0)
    assert float(task_balanced_nll(logp, mask, groups, "examples").mean()) == pytest.approx(3.0)
    # The gradient of the balanced loss flows to every row, b's three times a's.
    logp.requires_grad_(True)
    task_balanced_nll(logp, mask, groups, "tokens").mean().backward()
    assert torch.allclose(logp.grad[3], 3 * logp.grad[0]) and bool((logp.grad < 0).all())


def test_task_groups_tell_tasks_apart_by_first_appearance():
    assert task_groups(["b", "a", "b", None, "a"]).tolist() == [0, 1, 0, 2, 1]
