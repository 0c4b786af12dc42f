"""``confidence``: drop the rows whose completion the model finds implausible with high
confidence, without a stronger model to judge them.

Idea: where a model confidently predicts other tokens than a row's completion, the row is
more likely mislabelled than hard. Each row is scored by its completion tokens' mean
log-probability under the model minus that of the model's own top token (0 when the
model would have written the completion itself, very negative when it confidently expects
something else); the rows scoring lowest are dropped until the budget is met. CLEAR first
fine-tunes the model on the data and then filters with its confidence: ``warmup_steps``
trains a copy briefly first (0 scores with the base as it is). In the spirit of CLEAR,
"Automated Data Curation for Robust Language Model Fine-Tuning" (Chen and Mueller, 2024).
"""

from __future__ import annotations

from pydantic import Field

from workbench.data.selection.selecting import Candidates, Selection, top_rows
from workbench.spec.entries import SelectorParams


class ConfidenceParams(SelectorParams):
    """Keep the ``budget`` rows the model finds most plausible."""

    warmup_steps: int = Field(
        0, ge=0, le=100_000, description="Steps a copy trains on all rows before scoring (0: none)."
    )
    warmup_batch: int = Field(16, ge=1, le=4096, description="Rows per warm-up step.")
    warmup_lr: float = Field(1e-3, gt=0, le=1, description="Warm-up AdamW learning rate.")


def plausibility(candidates: Candidates, seed: int, settings) -> list[float]:
    """Per row: mean log-prob of its completion tokens minus that of the model's top tokens
    (<= 0; lower is more confidently implausible)."""
    from workbench.data.selection import features

    model = candidates.model
    if settings.warmup_steps:
        model = features.train_proxy(
            model,
            candidates.tokenizer,
            candidates.rows,
            steps=settings.warmup_steps,
            batch_size=settings.warmup_batch,
            lr=settings.warmup_lr,
            max_length=candidates.max_length,
            seed=seed,
        )
    stats = features.completion_stats(
        model, candidates.tokenizer, candidates.rows, candidates.max_length, candidates.batch_size
    )
    return (stats.target_logprob - stats.top_logprob).tolist()


def select_confident(candidates: Candidates, count: int, seed: int, settings) -> Selection:
    """Score: :func:`plausibility`; the ``count`` most plausible rows are kept."""
    scores = plausibility(candidates, seed, settings)
    return Selection(settings.name, top_rows(scores, count), scores)
