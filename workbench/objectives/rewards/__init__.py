"""The built-in rewards: what RL methods train on and what ``reward:<name>`` objectives name.

Each is ``fn(completion: str, example: dict) -> float`` (the contract of
:mod:`workbench.objectives.scoring`), registered there under its name in :data:`BUILTIN`:

| name | definition | range |
|---|---|---|
| ``correct`` | the completion's answer equals the reference answer | 0 or 1 |
| ``format`` | the completion has the shape of the reference answer | 0 or 1 |
| ``brevity`` | ``1 - min(words / 16, 1)`` | [0, 1] |
| ``length`` | ``min(words / 16, 1)`` | [0, 1] |
| ``sentiment`` | VADER's compound score | [-1, 1] |
| ``similarity`` | cosine of all-MiniLM-L6-v2 embeddings of completion and answer | [-1, 1] |

Importing this package loads no model and no torch: a reward that needs a heavy package
loads it on first call and keeps it; one that needs an optional package says which through
``missing()``. A reward may offer ``score_batch(completions, examples) -> list[float]``
(``similarity`` does); :func:`workbench.objectives.scoring.score_texts` uses it when present.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench.objectives.rewards.length import DEFAULT_TARGET_WORDS, Brevity, Length
from workbench.objectives.rewards.sentiment import Sentiment
from workbench.objectives.rewards.similarity import Similarity
from workbench.objectives.rewards.task_answers import correct, follows_format

BUILTIN: dict[str, Callable[[str, dict], float]] = {
    "correct": correct,
    "format": follows_format,
    "brevity": Brevity(),
    "length": Length(),
    "sentiment": Sentiment(),
    "similarity": Similarity(),
}

__all__ = [
    "BUILTIN",
    "DEFAULT_TARGET_WORDS",
    "Brevity",
    "Length",
    "Sentiment",
    "Similarity",
    "correct",
    "follows_format",
]
