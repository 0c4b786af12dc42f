"""``distribution-matching``: pick the rows that bring the training set's distribution
closest to a target sample (greedy maximum mean discrepancy over embeddings).

Idea: when the candidates are drawn from a broader or shifted pool than the task one cares
about, the rows worth their budget are those that move the training distribution toward
that task's. Rows and target are embedded by the base model
(:func:`~workbench.data.selection.features.mean_hidden_states`); the subset is grown one
row at a time, each time adding the row that makes the squared MMD (RBF kernel, bandwidth
by the median heuristic) between the subset and the target smallest. In the spirit of "Get
more for less: Principled Data Selection for Warming Up Fine-Tuning in LLMs" (Kang et al.,
2024), which moves the pre-training distribution toward the target with optimal transport;
MMD is the simpler distance used here.

The target sample: ``target_size`` rows of the built-in task ``target``, drawn outside its
held-out pool with a seed of their own; without ``target``, the run's own task (its
``data.source``), and for a user's dataset its held-out rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from workbench.data.selection.selecting import Candidates, Selection
from workbench.data.tasks import TASKS
from workbench.spec.entries import SelectorParams

# The seed the target rows of a task are drawn with (the held-out rows have theirs).
TARGET_SEED = 20_000

if TYPE_CHECKING:
    import numpy as np


class DistributionMatchingParams(SelectorParams):
    """Greedily pick rows whose embeddings bring the subset closest (MMD) to a target sample."""

    target: str | None = Field(
        None,
        description="A built-in task whose rows are the target sample (None: the run's own "
        "task; a user dataset's held-out rows).",
    )
    target_size: int = Field(64, ge=1, le=100_000, description="Rows in the target sample.")

    @field_validator("target")
    @classmethod
    def _a_task(cls, v: str | None) -> str | None:
        if v is not None and v not in TASKS:
            raise ValueError(f"unknown task '{v}'; allowed: {', '.join(TASKS)}")
        return v


def target_rows(candidates: Candidates, settings) -> list:
    """The target sample (see the module docstring)."""
    task = TASKS.get(settings.target or candidates.source)
    if task is None:
        return list(candidates.held_out)[: settings.target_size]
    return task.training_rows(settings.target_size, seed=TARGET_SEED)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    import numpy as np

    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-gamma * np.clip(squared, 0, None))


def median_gamma(x: np.ndarray) -> float:
    """1 / (2 median^2) of the pairwise distances of ``x`` (the median heuristic)."""
    import numpy as np

    squared = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    distances = np.sqrt(np.clip(squared[np.triu_indices(len(x), k=1)], 0, None))
    median = float(np.median(distances)) if distances.size else 1.0
    return 1.0 / (2 * median**2) if median > 0 else 1.0


def greedy_mmd(
    candidates: np.ndarray, target: np.ndarray, count: int
) -> tuple[list[int], np.ndarray]:
    """``count`` rows of ``candidates`` chosen greedily to minimise the squared MMD to
    ``target`` (float64), and each candidate's witness value (mean kernel to the target
    minus mean kernel to the candidates: > 0 where the target is denser)."""
    import numpy as np

    gamma = median_gamma(np.concatenate([candidates, target]))
    k_cc = rbf_kernel(candidates, candidates, gamma)
    to_target = rbf_kernel(candidates, target, gamma).mean(1)
    chosen: list[int] = []
    taken = np.zeros(len(candidates), dtype=bool)
    to_chosen = np.zeros(len(candidates))  # sum of kernel values to the chosen rows
    within, toward = 0.0, 0.0  # sums over the chosen: kernel among them; mean kernel to target
    for size in range(1, count + 1):
        # MMD^2 of chosen + i, less the target's own term (the same for every i).
        mmd = (within + 2 * to_chosen + np.diag(k_cc)) / size**2 - 2 * (toward + to_target) / size
        mmd[taken] = np.inf
        i = int(np.argmin(mmd))
        chosen.append(i)
        taken[i] = True
        within += 2 * to_chosen[i] + k_cc[i, i]
        toward += to_target[i]
        to_chosen += k_cc[:, i]
    return sorted(chosen), to_target - k_cc.mean(1)


def select_matching(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: the row's MMD witness value (higher: the target is denser there than the
    candidates are)."""
    from workbench.data.selection import features

    def embed(rows):
        return (
            features.mean_hidden_states(
                candidates.model,
                candidates.tokenizer,
                rows,
                candidates.max_length,
                candidates.batch_size,
            )
            .double()
            .numpy()
        )

    chosen, witness = greedy_mmd(
        embed(candidates.rows), embed(target_rows(candidates, settings)), count
    )
    return Selection(settings.name, chosen, witness.tolist())
