"""``online-batch``: choose each training batch while a proxy trains, by the utility and the
diversity of the rows drawn for it, until the budget is spent.

Idea: which rows are worth a step changes as a model learns; scoring a larger drawn pool
at every step and training on the best keeps the budget on rows that are not yet learnt
(utility: the current loss) and not redundant with each other (diversity: distance to the
rows already picked for the batch). At each step ``pool_factor`` times the batch is drawn
from the rows not yet chosen; rows are picked greedily by z-scored loss plus
``diversity_weight`` times their z-scored distance (in the proxy's embedding space) to the
nearest row already picked; the proxy (a copy of the base) trains one step on them. The rows
picked over the steps are the selection. In the spirit of "Prioritized Training on Points
that are Learnable, Worth Learning, and Not Yet Learnt" (Mindermann et al., 2022) for
utility and "Diversified Batch Selection for Training Acceleration" (Hong et al., 2024)
for diversity; the selection is made on a proxy before the run trains, so the run trains
on its rows as it would on any subset.

The same rule chooses batches in the run itself with ``data.online_batch`` (the trained model
scores each step's drawn pool: ``WorkbenchModule.pick_online``), where :func:`pick_batch` is
shared.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field

from workbench.data.selection.selecting import Candidates, Selection
from workbench.spec.entries import SelectorParams

if TYPE_CHECKING:
    import torch


class OnlineBatchParams(SelectorParams):
    """Pick each proxy batch from a larger drawn pool by loss and diversity."""

    batch: int = Field(8, ge=1, le=4096, description="Rows picked per proxy step.")
    pool_factor: int = Field(4, ge=1, le=100, description="Rows drawn per step, per row picked.")
    diversity_weight: float = Field(
        1.0, ge=0, le=100, description="Weight of diversity against utility (0: loss alone)."
    )
    proxy_lr: float = Field(1e-3, gt=0, le=1, description="Proxy AdamW learning rate.")


def zscore(values: torch.Tensor) -> torch.Tensor:
    spread = values.std() if len(values) > 1 else values.new_tensor(0.0)
    return (values - values.mean()) / (spread if spread > 0 else 1)


def pick_batch(
    loss: torch.Tensor, embeddings: torch.Tensor, size: int, diversity_weight: float
) -> tuple[list[int], torch.Tensor]:
    """``size`` positions of a drawn pool picked greedily by z-scored ``loss`` plus
    ``diversity_weight`` times the z-scored distance to the nearest row picked so far (the
    first pick by loss alone); returns them and each pool row's score when it was picked
    (its last score for rows left out)."""
    import torch

    utility = zscore(loss.double())
    distances = torch.cdist(embeddings.double(), embeddings.double())
    nearest = torch.full_like(utility, math.inf)
    scores = utility.clone()
    picked: list[int] = []
    for _ in range(size):
        if picked:  # every distance to the nearest picked row is finite from here on
            scores = utility + diversity_weight * zscore(nearest)
        candidates = scores.clone()
        candidates[picked] = -math.inf
        i = int(torch.argmax(candidates))
        picked.append(i)
        nearest = torch.minimum(nearest, distances[i])
    return picked, scores


def select_online(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: the row's utility-and-diversity score when it was last scored in a drawn pool;
    rows never drawn keep their z-scored loss under the base."""
    import torch

    from workbench.data.selection import features

    model, tokenizer, rows = candidates.model, candidates.tokenizer, candidates.rows
    base_loss = features.completion_stats(
        model, tokenizer, rows, candidates.max_length, candidates.batch_size
    ).loss
    scores = zscore(base_loss.double())
    chosen: list[int] = []
    left = list(range(len(rows)))

    def next_batch(proxy, generator: torch.Generator) -> list[int]:
        size = min(settings.batch, count - len(chosen))
        order = torch.randperm(len(left), generator=generator)[: size * settings.pool_factor]
        pool = [left[i] for i in order.tolist()]
        pool_rows = [rows[i] for i in pool]
        loss = features.completion_stats(proxy, tokenizer, pool_rows, candidates.max_length).loss
        embeddings = features.mean_hidden_states(proxy, tokenizer, pool_rows, candidates.max_length)
        picked, pool_scores = pick_batch(loss, embeddings, size, settings.diversity_weight)
        for position, row in enumerate(pool):
            scores[row] = pool_scores[position]
        batch = [pool[i] for i in picked]
        chosen.extend(batch)
        for row in batch:
            left.remove(row)
        return batch

    features.train_proxy(
        model,
        tokenizer,
        rows,
        steps=math.ceil(count / settings.batch),
        batch_size=settings.batch,
        lr=settings.proxy_lr,
        max_length=candidates.max_length,
        seed=seed,
        next_batch=next_batch,
    )
    return Selection(settings.name, sorted(chosen), scores.tolist())
