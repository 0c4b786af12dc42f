"""Row kinds beyond supervised rows: preference pairs from the built-in tasks, their encoding
and batches (the ways a method gets its reference model's log-probs are tested with the
strategies, in tests/methods/test_reference.py)."""

from __future__ import annotations

import pytest

from tests.conftest import fast_spec
from workbench.data.encode import encode_row
from workbench.data.encode_pairs import (
    collate_pairs,
    collate_unpaired,
    encode_pairs,
    encode_unpaired,
)
from workbench.data.pairs import corrupt_answer, preference_pairs
from workbench.data.rows import PreferenceRow, Row
from workbench.data.sources import load_rows
from workbench.data.tasks import TASKS
from workbench.models.loading import load_base
from workbench.spec.run_spec import RunSpec


@pytest.mark.parametrize("task", sorted(TASKS))
def test_pairs_from_built_in_tasks_reject_a_wrong_answer(task):
    spec = RunSpec.parse({"data": {"source": task, "train_size": 50, "eval_size": 16}})
    train, held_out = load_rows(spec.data, 0, row_kind="preference")
    rows, _ = TASKS[task].splits(50, 16, 0)
    assert all(isinstance(r, PreferenceRow) for r in train + held_out)
    assert [r.prompt for r in train] == [r.prompt for r in rows]
    assert [r.chosen for r in train] == [r.completion for r in rows]
    assert all(r.rejected != r.chosen for r in train + held_out)
    assert preference_pairs(rows, 0) == train  # reproducible


def test_corrupt_answer_is_never_the_answer():
    import random

    rng = random.Random(0)
    for answer in (" 1", " 1 2 3", " a b a", " 7 7", " x", ""):
        for _ in range(20):
            assert corrupt_answer(answer, rng).split() != answer.split()


@pytest.fixture(scope="module")
def tiny():
    spec = RunSpec.parse(fast_spec())
    return spec, load_base(spec.model, log=lambda *a: None)


def test_pairs_encode_like_supervised_rows_and_batch_chosen_then_rejected(tiny):
    _, base = tiny
    rows = [PreferenceRow("add 1 2:", " 3", " 4"), PreferenceRow("add 10 20:", " 30", " 31 0")]
    encoded, stats = encode_pairs(base.tokenizer, rows, 64)
    assert stats.rows == 2 and len(encoded) == 2
    for row, pair in zip(rows, encoded):
        assert pair.chosen == encode_row(base.tokenizer, Row.plain(row.prompt, row.chosen), 64)
        assert pair.rejected == encode_row(base.tokenizer, Row.plain(row.prompt, row.rejected), 64)
    batch = collate_pairs(encoded, 0)
    assert int(batch["n_pairs"]) == 2 and batch["input_ids"].shape[0] == 4
    assert (
        batch["input_ids"][0, : len(encoded[0].chosen.input_ids)].tolist()
        == encoded[0].chosen.input_ids
    )
    assert (
        batch["input_ids"][2, : len(encoded[0].rejected.input_ids)].tolist()
        == encoded[0].rejected.input_ids
    )

    unpaired, _ = encode_unpaired(base.tokenizer, rows, 64)
    assert [u.desirable for u in unpaired] == [True, False, True, False]
    assert collate_unpaired(unpaired, 0)["desirable"].tolist() == [True, False, True, False]


def test_a_pair_with_nothing_left_after_truncation_is_dropped_and_counted(tiny):
    _, base = tiny
    long_prompt = "add " + " ".join(["1"] * 40) + ":"
    rows = [PreferenceRow("add 1 2:", " 3", " 4"), PreferenceRow(long_prompt, " 3", " 4")]
    encoded, stats = encode_pairs(base.tokenizer, rows, 12)
    assert len(encoded) == 1 and stats.dropped_rows == 1 and stats.examples_dropped == [1]
