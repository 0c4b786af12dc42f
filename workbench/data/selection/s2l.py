"""``s2l``: cluster the loss trajectories of a small proxy trained briefly, then sample the
budget across the clusters.

Idea: rows the proxy learns alike (the same loss curve over its training) teach the large
model alike, so a subset sampled evenly across trajectory clusters keeps every kind of
learning dynamics while dropping redundant rows. The proxy here is a copy of the base
(already small on the tiny base; a script may pass a smaller model as ``candidates.model``);
it trains ``proxy_steps`` AdamW steps on all candidates, recording every row's loss
``trajectory_points`` times. "SmallToLarge (S2L): Scalable Data Selection for Fine-tuning
Large Language Models by Summarizing Training Trajectories of Small Models" (Yang et al.,
2024).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench.data.selection.selecting import Candidates, Selection
from workbench.spec.entries import SelectorParams

if TYPE_CHECKING:
    import numpy as np


class S2LParams(SelectorParams):
    """Train a proxy briefly, cluster the rows' loss trajectories, sample across clusters."""

    clusters: int = Field(8, ge=1, le=1000, description="k-means clusters of trajectories.")
    proxy_steps: int = Field(20, ge=1, le=100_000, description="Proxy training steps.")
    proxy_batch: int = Field(16, ge=1, le=4096, description="Rows per proxy step.")
    proxy_lr: float = Field(1e-3, gt=0, le=1, description="Proxy AdamW learning rate.")
    trajectory_points: int = Field(
        4, ge=1, le=1000, description="Losses recorded per row (evenly over the proxy's steps)."
    )


def loss_trajectories(candidates: Candidates, seed: int, settings) -> np.ndarray:
    """Each row's proxy loss before training and at ``trajectory_points`` evenly spaced
    steps: shape (rows, points + 1)."""
    import numpy as np

    from workbench.data.selection import features

    def losses(model) -> np.ndarray:
        stats = features.completion_stats(
            model,
            candidates.tokenizer,
            candidates.rows,
            candidates.max_length,
            candidates.batch_size,
        )
        return stats.loss.numpy()

    points = min(settings.trajectory_points, settings.proxy_steps)
    record_at = {round(settings.proxy_steps * (k + 1) / points) for k in range(points)}
    trajectory = [losses(candidates.model)]

    def record(proxy, step: int) -> None:
        if step in record_at:
            trajectory.append(losses(proxy))

    features.train_proxy(
        candidates.model,
        candidates.tokenizer,
        candidates.rows,
        steps=settings.proxy_steps,
        batch_size=settings.proxy_batch,
        lr=settings.proxy_lr,
        max_length=candidates.max_length,
        seed=seed,
        after_step=record,
    )
    return np.stack(trajectory, axis=1)


def select_s2l(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: how much the proxy's loss on the row fell over its training (first recorded
    loss minus last; a row the proxy learns scores high)."""
    from workbench.data.selection import clusters

    trajectory = loss_trajectories(candidates, seed, settings)
    labels, _ = clusters.kmeans_labels(trajectory, settings.clusters, seed)
    chosen = clusters.sample_across_clusters(labels, count, seed)
    return Selection(settings.name, chosen, (trajectory[:, 0] - trajectory[:, -1]).tolist())
