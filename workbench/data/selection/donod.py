"""``donod``: model-intrinsic pruning by how much one step on a row would move the weights,
ranked by a multi-criteria rule (TOPSIS).

Idea: a row whose gradient step changes the weights' norm in the direction training goes
on average carries lasting signal, while a row whose step is very large destabilises the
weights. For each row, one plain step of size ``lr`` on it alone moves the weights W to
W - lr g; two criteria are read off it: DON (delta of norm, |W - lr g| - |W|, a benefit)
and NOD (norm of delta, lr |g|, a cost). TOPSIS ranks the rows by their closeness to the
ideal row (best DON, lowest NOD) and away from the worst; the closest are kept. In the
spirit of "DONOD: Efficient and Generalizable Instruction Fine-Tuning for LLMs via
Model-Intrinsic Dataset Pruning" (2025); here DON is measured on one step from the base
rather than accumulated over a fine-tune.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench.data.selection.selecting import Candidates, Selection, top_rows
from workbench.spec.entries import SelectorParams

if TYPE_CHECKING:
    import numpy as np


class DonodParams(SelectorParams):
    """Rank rows by the weight change one step on each would make (TOPSIS over DON and NOD)."""

    lr: float = Field(1e-3, gt=0, le=1, description="Size of the one step each row is measured by.")
    nod_weight: float = Field(
        0.5, ge=0, le=1, description="Weight of NOD (step size, a cost); DON gets the rest."
    )


def topsis(criteria: np.ndarray, weights: np.ndarray, benefit: np.ndarray) -> np.ndarray:
    """TOPSIS closeness in [0, 1] of each row (alternative) of ``criteria`` (rows x
    criteria): columns normalised by their Euclidean norm and weighted, distances to the
    ideal point (the best value of each column: its max where ``benefit`` else its min) and to
    the anti-ideal; closeness = d_anti / (d_ideal + d_anti)."""
    import numpy as np

    norms = np.linalg.norm(criteria, axis=0)
    scaled = criteria / np.where(norms == 0, 1, norms) * weights
    ideal = np.where(benefit, scaled.max(0), scaled.min(0))
    worst = np.where(benefit, scaled.min(0), scaled.max(0))
    to_ideal = np.linalg.norm(scaled - ideal, axis=1)
    to_worst = np.linalg.norm(scaled - worst, axis=1)
    total = to_ideal + to_worst
    return np.where(total == 0, 1.0, to_worst / np.where(total == 0, 1, total))


def select_donod(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: the row's TOPSIS closeness over (DON, benefit; NOD, cost)."""
    import numpy as np

    from workbench.data.selection import features

    stats = features.step_stats(
        candidates.model, candidates.tokenizer, candidates.rows, candidates.max_length
    )
    don = stats.norm_change(settings.lr).numpy()
    nod = settings.lr * stats.grad_norm.numpy()
    # TOPSIS normalises by column norms, so DON is shifted to be non-negative first.
    criteria = np.stack([don - don.min(), nod], axis=1)
    weights = np.array([1 - settings.nod_weight, settings.nod_weight])
    scores = topsis(criteria, weights, benefit=np.array([True, False])).tolist()
    return Selection(settings.name, top_rows(scores, count), scores)
