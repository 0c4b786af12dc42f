"""``reward:brevity`` and ``reward:length``: the share of a word budget a completion uses.

Both count words as the tasks' ``metric:length_items`` does (whitespace-separated items) and
compare them with a target, ``T`` words (:data:`DEFAULT_TARGET_WORDS` for the built-in ones;
``Brevity(target_words=8)`` makes another, to register under a name of its own):
``length = min(words / T, 1)`` and ``brevity = 1 - length``, both in [0, 1]. They saturate at
``T`` words so that, in a weighted sum with a 0/1 reward such as ``correct``, a weight means
the same thing whatever the completion's length.

Why they conflict with ``correct`` on the built-in ``arithmetic`` task, and how differently.
The answer there is a single word, and exact match fails on any other word:

- ``length`` rewards running on. The correct answer earns ``1/T`` of it, ``T`` words (no
  longer an exact match) earn 1; per prompt a policy trades one for the other, and under
  training weights ``w_c, w_l`` answering pays more while ``w_c > w_l (1 - 1/T)``. With
  ``T = 16`` the switch sits at ``w_l`` of about 0.52 on the weight simplex, inside the range
  a weight sweep covers: the two objectives have a real front (answer on a share ``p`` of
  prompts: correct ``p``, length ``p/T + 1 - p``).
- ``brevity`` agrees with ``correct`` against rambling (both prefer stopping right after the
  answer) and disagrees only about saying nothing at all: the empty completion earns 1, the
  answer ``1 - 1/T``. Stopping before the answer pays only while ``w_b / T > w_c`` (``w_b``
  above 0.94 for ``T = 16``), so it is the weak, shaping side of the pair; on ``order``, where
  correctness grows with each item produced, it trades item by item.
"""

from __future__ import annotations

DEFAULT_TARGET_WORDS = 16


class _WordBudget:
    def __init__(self, target_words: int = DEFAULT_TARGET_WORDS) -> None:
        if isinstance(target_words, bool) or not isinstance(target_words, int) or target_words < 1:
            raise ValueError(
                f"target_words must be a whole number of words >= 1, got {target_words!r}"
            )
        self.target_words = target_words

    def used(self, completion: str) -> float:
        """The share of the budget used, ``min(words / T, 1)``."""
        words = len(completion.split())  # the count metric:length_items reports
        return min(words / self.target_words, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_words={self.target_words})"


class Length(_WordBudget):
    """``min(words / T, 1)`` in [0, 1]: 1 from ``T`` words on (T = 16 by default); more is better
    for a "longer" objective. See the module docstring for how it conflicts with ``correct``."""

    def __call__(self, completion: str, example: dict) -> float:
        return self.used(completion)


class Brevity(_WordBudget):
    """``1 - min(words / T, 1)`` in [0, 1]: 1 for an empty completion, 0 from ``T`` words on
    (T = 16 by default). See the module docstring for how it conflicts with ``correct``."""

    def __call__(self, completion: str, example: dict) -> float:
        return 1.0 - self.used(completion)
