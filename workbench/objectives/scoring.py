"""What an objective can measure: metrics and rewards of generated text, loss terms, costs.

An objective's ``source`` names one of:
- ``metric:<name>``: a score of each held-out generation, averaged (built-in task metrics,
  ``eval_loss``, or any registered with :func:`register_metric`);
- ``reward:<name>``: the same for a reward function (:func:`register_reward`); rewards are
  also what RL methods train on;
- ``term:<name>``: a method's loss term, measured on the held-out rows;
- ``cost:<name>``: trainable parameters, peak memory or training time.

A metric or reward is ``fn(completion: str, example: dict) -> float`` where ``example`` holds
the row's ``prompt``, its reference ``answer`` and ``completion``, and its named segments
(``explanation``, ...). Pure Python; importing this module never imports torch.

Built-in rewards (:mod:`workbench.objectives.rewards`): ``correct``, ``format``, ``brevity``,
``length``, ``sentiment`` and ``similarity``. A reward may offer
``score_batch(completions, examples)`` (:func:`score_texts` uses it) and ``missing()`` (why it
cannot run here: a package it needs is absent; :func:`missing_package` asks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.data import tasks
from workbench.data.rows import ChatRow, PreferenceRow, Row
from workbench.objectives import rewards as builtin_rewards
from workbench.spec.objective_source import parse_source
from workbench.spec.registration import check_new_name

TextScore = Callable[[str, dict], float]


def _task_metric(fn: Callable[[str, Row], float]) -> TextScore:
    # Built-in task metrics read the typed row; registered ones get the plain dict. A
    # preference pair is scored against its supervised row (PreferenceRow.as_row).
    def score(completion: str, example: dict) -> float:
        row = example["row"]
        return fn(completion, row.as_row() if isinstance(row, PreferenceRow) else row)

    score.__name__ = fn.__name__
    score.__doc__ = fn.__doc__
    score.__module__ = fn.__module__
    return score


METRICS: dict[str, TextScore] = {name: _task_metric(fn) for name, fn in tasks.METRICS.items()}
REWARDS: dict[str, TextScore] = dict(builtin_rewards.BUILTIN)
# Names a user cannot replace (they are what the built-in tasks' objectives name).
_BUILTIN_METRICS = frozenset(METRICS) | {"eval_loss"}
_BUILTIN_REWARDS = frozenset(REWARDS)
_BUILTIN = {"metric": _BUILTIN_METRICS, "reward": _BUILTIN_REWARDS}


def register_metric(name: str, fn: TextScore) -> TextScore:
    """Register ``fn(completion, example) -> float`` as ``metric:<name>``. Returns ``fn``."""
    _register(METRICS, name, fn, "metric", _BUILTIN_METRICS)
    return fn


def register_reward(name: str, fn: TextScore) -> TextScore:
    """Register ``fn(completion, example) -> float`` as ``reward:<name>``. Returns ``fn``."""
    _register(REWARDS, name, fn, "reward", _BUILTIN_REWARDS)
    return fn


def _register(table: dict, name: str, fn: Any, what: str, protected: frozenset) -> None:
    check_new_name(name, table, what, builtin=protected)
    if not callable(fn):
        raise TypeError(f"a {what} must be callable as fn(completion: str, example: dict) -> float")
    table[name] = fn


def scorer(source: str) -> TextScore | None:
    """The text-scoring function of a ``metric:``/``reward:`` source (None for other kinds)."""
    kind, name = parse_source(source)
    table = {"metric": METRICS, "reward": REWARDS}.get(kind)
    return None if table is None else table.get(name)


def score_texts(fn: TextScore, completions: list[str], examples: list[dict]) -> list[float]:
    """``fn`` of each completion and its example: in one call to ``fn.score_batch`` when the
    scorer offers it (a model scores a batch far faster than one text at a time)."""
    batched = getattr(fn, "score_batch", None)
    if callable(batched):
        return [float(v) for v in batched(completions, examples)]
    return [float(fn(c, e)) for c, e in zip(completions, examples)]


def missing_package(source: str) -> str | None:
    """Why a ``metric:``/``reward:`` source cannot be scored on this machine (one line naming
    the package and how to install it), or None."""
    check = getattr(scorer(source), "missing", None)
    return check() if callable(check) else None


def example_of(row: Row | ChatRow | PreferenceRow) -> dict:
    """The ``example`` dict a metric or reward sees for a held-out row."""
    if isinstance(row, Row):
        example = {"prompt": row.prompt, "answer": row.answer, "completion": row.completion}
        for name, text in row.segments:
            example[name] = example.get(name, "") + text if name != "answer" else row.answer
    elif isinstance(row, PreferenceRow):
        example = {
            "prompt": row.prompt,
            "answer": row.chosen,
            "completion": row.chosen,
            "rejected": row.rejected,
        }
    else:
        example = {
            "prompt": list(row.prompt_messages),
            "answer": row.answer,
            "completion": row.answer,
            "messages": list(row.messages),
        }
    example["row"] = row
    return example


def module_of(source: str) -> str | None:
    """The module defining a registered metric/reward (None for built-ins and other kinds)."""
    fn = scorer(source)
    kind, name = parse_source(source)
    if fn is None or name in _BUILTIN[kind]:
        return None
    return getattr(fn, "__module__", None)
