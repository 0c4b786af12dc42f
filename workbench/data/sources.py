"""Turn a DataSpec into training and held-out rows (built-in task or user dataset)."""

from __future__ import annotations

from workbench.data.formats import load_dataset_rows, split_rows
from workbench.data.rows import PreferenceRow
from workbench.data.tasks import TASKS
from workbench.errors import DataError


def load_rows(data_spec, seed: int, *, allow_preference: bool = False):
    """(train_rows, eval_rows) for ``data_spec``; raises DataError before anything is written."""
    task = TASKS.get(data_spec.source)
    if task is not None:
        return task.splits(data_spec.train_size, data_spec.eval_size, seed)
    rows = load_dataset_rows(data_spec.source, split=data_spec.split)
    if not allow_preference and any(isinstance(r, PreferenceRow) for r in rows):
        raise DataError(
            "has prompt/chosen/rejected (preference) rows; SFT methods need prompt/completion or "
            "messages rows. Choose a preference method, or supply completions",
            source=data_spec.source,
        )
    train, held_out = split_rows(rows, data_spec.eval_fraction, seed)
    return train[: data_spec.train_size], held_out[: data_spec.eval_size]
