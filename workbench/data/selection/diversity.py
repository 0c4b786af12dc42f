"""``diversity``: k-means over the base model's embeddings of the rows, the budget shared
out across the clusters.

Idea: a small subset covering every kind of example teaches more than one drawn mostly from
the commonest kind. Each row is embedded as the base model's mean last-layer hidden state
(:func:`~workbench.data.selection.features.mean_hidden_states`), the embeddings are
clustered with k-means, and each cluster gets an equal quota of the budget (a small cluster
whole), sampled uniformly within it. In the spirit of clustering-based instruction-data
selection, e.g. "Diversity Measurement and Subset Selection for Instruction Tuning
Datasets" (Wang et al., 2024) and "Self-Evolved Diverse Data Sampling for Efficient
Instruction Tuning" (DiverseEvol, Wu et al., 2023).
"""

from __future__ import annotations

from pydantic import Field

from workbench.data.selection.selecting import Candidates, Selection
from workbench.spec.entries import SelectorParams


class DiversityParams(SelectorParams):
    """Cluster the rows' embeddings and sample the budget across the clusters."""

    clusters: int = Field(8, ge=1, le=1000, description="k-means clusters (at most the rows).")


def select_diverse(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: minus the row's distance to its cluster's centre (a typical row scores high)."""
    from workbench.data.selection import clusters, features

    embeddings = features.mean_hidden_states(
        candidates.model,
        candidates.tokenizer,
        candidates.rows,
        candidates.max_length,
        candidates.batch_size,
    )
    labels, distance = clusters.kmeans_labels(embeddings.numpy(), settings.clusters, seed)
    chosen = clusters.sample_across_clusters(labels, count, seed)
    return Selection(settings.name, chosen, (-distance).tolist())
