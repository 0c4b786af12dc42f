"""A mixture of built-in tasks for multi-task SFT (``data.mixture: {reverse: 0.5, sort: 0.5}``).

Each task brings its weight's share of the training rows and held-out rows of its own, and
every row names its task (``Row.task``), so a run scores each task on its own held-out rows
(``<objective>/<task>``) and a method can balance its loss across tasks (SFT's
``task_balance``, in the spirit of MFTCoder). Related tasks in one mixture can help each
other (the "cocktail effect"): a weight sweep over the mixture shows the trade-off.
Pure Python: the spec validates a mixture without importing torch.
"""

from __future__ import annotations

import math
import random

from workbench.data.corruption import corrupt_labels
from workbench.data.rows import Row
from workbench.data.tasks import TASKS
from workbench.spec import registry

# ``data.source`` of a mixture of built-in tasks (``data.mixture`` holds the tasks' weights).
MIXTURE_SOURCE = "mixture"


def mixture_counts(weights: dict[str, float], total: int) -> dict[str, int]:
    """How many of ``total`` training rows each task of a mixture gets: its share of the
    weights, rounded by largest remainder (the counts sum to ``total``; ties go to the task
    named first). A task of weight 0 gets none."""
    weight_sum = sum(weights.values())
    exact = {name: total * w / weight_sum for name, w in weights.items()}
    counts = {name: math.floor(v) for name, v in exact.items()}
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])  # stable sort
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def mixture_rows(data_spec, seed: int, kind) -> tuple[list, list]:
    """(train_rows, eval_rows) of a mixture of built-in tasks, as the row kind ``kind``.

    Each task draws its share of ``data.train_size`` (:func:`mixture_counts`) from its own
    seeded rows, and the training rows are shuffled together (seeded by ``seed``); every task
    of the mixture, a weight-0 one included, brings ``data.eval_size`` held-out rows, so each
    is scored on its own (``<objective>/<task>``). Every row names its task (``Row.task``).
    ``data.corrupt_fraction`` corrupts that share of the shuffled training rows, as for one
    task; each task's rows then become the kind's rows through its ``from_task``.
    """
    counts = mixture_counts(data_spec.mixture, data_spec.train_size)
    train: list[Row] = []
    held_out: dict[str, list[Row]] = {}
    for name, count in counts.items():
        task_train, held_out[name] = TASKS[name].splits(count, data_spec.eval_size, seed)
        train += task_train
    random.Random(f"mixture:{seed}").shuffle(train)
    if data_spec.corrupt_fraction:
        train = corrupt_labels(train, data_spec.corrupt_fraction, seed)
    from_task = registry.resolve(kind.from_task)
    out_train: list = [None] * len(train)
    out_eval: list = []
    for name in counts:
        positions = [i for i, row in enumerate(train) if row.task == name]
        task_train, task_eval = from_task(
            TASKS[name], [train[i] for i in positions], held_out[name], seed
        )
        for i, row in zip(positions, task_train):
            out_train[i] = row
        out_eval += task_eval
    return out_train, out_eval
