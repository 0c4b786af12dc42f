"""What the clustering selectors share: k-means (scikit-learn's) and sampling a budget
across clusters so that small clusters are not crowded out by large ones."""

from __future__ import annotations

import random

import numpy as np


def kmeans_labels(features, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``features`` (rows x dims) into at most ``clusters`` groups with
    scikit-learn's k-means (seeded, 4 initialisations); returns each row's label and its
    distance to its cluster's centre."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    k = max(1, min(clusters, len(np.unique(x, axis=0))))
    fit = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    distance = np.linalg.norm(x - fit.cluster_centers_[fit.labels_], axis=1)
    return fit.labels_, distance


def balanced_quotas(sizes: list[int], count: int) -> list[int]:
    """How many rows to take from each cluster: an equal share each, a cluster smaller than
    its share given whole and the rest shared among the others (water-filling, as S2L's
    balanced sampling does); the quotas sum to ``count`` (at most the rows there are)."""
    quotas = [0] * len(sizes)
    left = min(count, sum(sizes))
    open_clusters = sorted(range(len(sizes)), key=lambda c: (sizes[c], c))
    while left > 0 and open_clusters:
        share = left // len(open_clusters)
        smallest = open_clusters[0]
        if sizes[smallest] - quotas[smallest] <= share:
            # Too small for an equal share: take it whole, share the rest among the others.
            left -= sizes[smallest] - quotas[smallest]
            quotas[smallest] = sizes[smallest]
            open_clusters.pop(0)
            continue
        # Every open cluster can take an equal share; the remainder goes one row each to the
        # largest clusters.
        for c in open_clusters:
            quotas[c] += share
        for c in sorted(open_clusters, key=lambda c: (-sizes[c], c))[
            : left - share * len(open_clusters)
        ]:
            quotas[c] += 1
        left = 0
    return quotas


def sample_across_clusters(labels, count: int, seed: int) -> list[int]:
    """``count`` rows drawn across the clusters ``labels`` gives each row: each cluster's
    quota (:func:`balanced_quotas`) sampled uniformly within it, seeded; ascending."""
    labels = np.asarray(labels)
    names = sorted(set(labels.tolist()))
    members = [np.flatnonzero(labels == c).tolist() for c in names]
    rng = random.Random(f"clusters:{seed}")
    chosen: list[int] = []
    for rows, quota in zip(members, balanced_quotas([len(m) for m in members], count)):
        chosen += rng.sample(rows, quota)
    return sorted(chosen)
