"""``reward:correct`` and ``reward:format``: a completion judged as an answer to its row.

A built-in task's completion is an answer, then, for ``explain``, an explanation after a ':'
(:mod:`workbench.data.tasks`). Which of the two a row expects is read from its reference
segments (the table :data:`LAYOUTS`), and the completion is split the way the task's own
metrics split it (:func:`workbench.data.tasks.answer_and_claims`), so a reward and the task's
metric never disagree about where the answer ends. Rows of a user's data set are plain
answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from workbench.data import tasks
from workbench.data.rows import PreferenceRow, Row

# What the items of a built-in answer are, tried in order: the reference's kind is the first
# whose pattern every one of its items matches.
ITEM_KINDS: dict[str, str] = {
    "integer": r"[+-]?\d+",
    "letter": r"[A-Za-z]",
}


@dataclass(frozen=True)
class Layout:
    """How a completion of one row layout splits into its answer and its explanation claims.

    ``split`` returns ``(answer, claims)``; ``explained`` says whether claims are expected.
    """

    split: Callable[[str], tuple[str, list[str]]]
    explained: bool


PLAIN = Layout(split=lambda text: (text, []), explained=False)
# Keyed by the names of the reference row's segments, in order.
LAYOUTS: dict[tuple[str, ...], Layout] = {
    ("answer",): PLAIN,
    ("answer", "explanation"): Layout(split=tasks.answer_and_claims, explained=True),
}


def _reference(example: dict) -> tuple[Row, Layout]:
    row = example.get("row")
    if isinstance(row, PreferenceRow):  # a built-in pair is scored against the row it came from
        row = row.as_row()
    if not isinstance(row, Row):  # a chat row or a bare example: its answer is the reference
        return Row.plain(str(example.get("prompt", "")), example["answer"]), PLAIN
    return row, LAYOUTS.get(tuple(name for name, _ in row.segments), PLAIN)


def correct(completion: str, example: dict) -> float:
    """1.0 when the completion's answer is exactly the reference answer, else 0.0.

    The answer is the whole completion, or for rows with an explanation (``explain``) the part
    before the ':'; it matches as the tasks' ``exact_match`` does (equal once surrounding
    whitespace is stripped). On ``arithmetic``, ``reverse``, ``sort`` and ``order`` it equals
    ``metric:exact_match``; on ``explain`` it is 1 exactly when ``answer_accuracy`` is.
    """
    row, layout = _reference(example)
    answer, _ = layout.split(completion)
    return tasks.exact_match(answer, row)


def _kind_of(items: list[str]) -> re.Pattern | None:
    for pattern in ITEM_KINDS.values():
        if all(re.fullmatch(pattern, item) for item in items):
            return re.compile(pattern)
    return None


def follows_format(completion: str, example: dict) -> float:
    """1.0 when the completion has the shape of the row's answer, else 0.0; right or not.

    Shape: as many whitespace-separated items as the reference answer, each of its kind (an
    integer for ``arithmetic``, ``sort`` and ``order``; a single letter for ``reverse``), and
    nothing else, so it fails a completion that runs on past the answer. For rows with an
    explanation (``explain``), the answer is followed by ':' and at least one claim, each
    ``a<b`` with ``a`` and ``b`` of the answer's kind. A reference of free text (items of no
    one kind) asks only for a non-empty completion. ``correct`` implies ``format``: the
    format reward pays for a well-formed wrong answer, a shaping signal early in RL.
    """
    row, layout = _reference(example)
    reference = row.answer.split()
    kind = _kind_of(reference)
    if kind is None:
        return float(bool(completion.strip()))
    answer, claims = layout.split(completion)
    items = answer.split()
    ok = len(items) == len(reference) and all(kind.fullmatch(item) for item in items)
    if layout.explained:
        claim = re.compile(f"(?:{kind.pattern})<(?:{kind.pattern})")
        ok = ok and bool(claims) and all(claim.fullmatch(c) for c in claims)
    return float(ok)
