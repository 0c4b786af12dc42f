"""The entry point of every data selector: the budget, the rows a selector sees, what it
returns, and :func:`select_rows`, which looks the selector up by name.

A selector is ``(candidates, count, seed, settings) -> Selection``: it keeps exactly
``count`` of ``candidates.rows`` and gives every row a score (what the selector ranks or
samples by; each selector's docstring says what its score means). A script calls a selector
through :func:`select_rows` as a run does, with the base model and tokenizer it wants to
score rows with; ``workbench.spec.components.register_selector`` adds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.spec import registry
from workbench.spec.entries import SelectorParams
from workbench.spec.errors import DataError


@dataclass(frozen=True)
class Candidates:
    """What a selector chooses from, and what it may score the rows with.

    ``rows`` are the training rows (of the method's row kind); ``model`` and ``tokenizer``
    the base model before training (None for selectors that need no model, such as
    ``random``); ``max_length`` the run's ``train.max_length`` and ``batch_size`` the rows
    scored at once. ``source`` is the run's ``data.source`` and ``held_out`` its held-out
    rows: a selector that matches a target distribution draws its target from them.
    """

    rows: Sequence[Any]
    model: Any = None
    tokenizer: Any = None
    max_length: int = 256
    batch_size: int = 32
    source: str = ""
    held_out: Sequence[Any] = ()


@dataclass(frozen=True)
class Selection:
    """The rows a selector kept (``chosen``: indices into the candidates, ascending) and a
    score for every candidate row (``scores[i]`` belongs to row ``i``)."""

    selector: str
    chosen: list[int]
    scores: list[float]
    settings: dict[str, Any] = field(default_factory=dict)

    def dropped(self) -> list[int]:
        """The candidate rows the selector left out, ascending."""
        kept = set(self.chosen)
        return [i for i in range(len(self.scores)) if i not in kept]

    def as_record(self) -> dict[str, Any]:
        """What a run logs of its selection (the ``data_selection.json`` artifact)."""
        return {
            "selector": self.selector,
            "settings": self.settings,
            "candidates": len(self.scores),
            "chosen": self.chosen,
            "scores": self.scores,
        }


def budget_count(budget: int | float, n_rows: int) -> int:
    """The rows a budget keeps out of ``n_rows``: a count as it is, a fraction of the rows
    rounded (at least 1). Raises DataError when there is nothing to choose from or the count
    is more than the rows."""
    if n_rows == 0:
        raise DataError(
            "data.select: the training set is empty, so there is nothing to select from; "
            "give data.source some training rows"
        )
    if isinstance(budget, float):
        return max(1, round(budget * n_rows))
    if budget > n_rows:
        raise DataError(
            f"data.select.budget = {budget}: more than the {n_rows} training rows; give at "
            f"most {n_rows}, or a fraction such as 0.3"
        )
    return budget


def select_rows(candidates: Candidates, settings: SelectorParams, seed: int) -> Selection:
    """Run the selector ``settings.name`` names on ``candidates`` for ``settings.budget``
    rows; the same candidates, settings and seed choose the same rows."""
    # The table imports every selector's settings, and they import this module.
    from workbench.spec import components

    entry = components.SELECTORS.get(settings.name)
    if entry is None:
        raise DataError(
            f"data.select.name = {settings.name!r}: unknown selector; allowed: "
            f"{registry.choices(components.SELECTORS)}"
        )
    count = budget_count(settings.budget, len(candidates.rows))
    selection: Selection = registry.resolve(entry.select)(candidates, count, seed, settings)
    if len(selection.chosen) != count or len(set(selection.chosen)) != count:
        raise DataError(
            f"selector '{settings.name}' kept {len(set(selection.chosen))} distinct rows, "
            f"not the {count} its budget asks for"
        )
    return Selection(
        settings.name,
        sorted(selection.chosen),
        [float(s) for s in selection.scores],
        settings.model_dump(mode="json", exclude={"name"}),
    )


def top_rows(scores: Sequence[float], count: int) -> list[int]:
    """The ``count`` rows with the highest scores (ties: the earlier row), ascending."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:count])
