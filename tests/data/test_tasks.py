"""Built-in tasks: held-out prompts stay out of training and pretraining, rows are seeded,
answers are right (recomputed from the prompt text), and the metrics on hand-worked cases."""

from __future__ import annotations

import re

import pytest

from workbench.data.rows import Row
from workbench.data.tasks import (
    HELDOUT_POOL,
    METRICS,
    TASKS,
    exact_match,
    length_items,
    prefix_accuracy,
)
from workbench.spec import registry
from workbench.spec.errors import DataError

SEEDS = (0, 1, 5, 123)


def verb(task_name: str) -> str:
    return {"arithmetic": "add", "addition": "What"}.get(task_name, task_name)


def heldout_prompts(task, n=HELDOUT_POOL) -> set[str]:
    return {r.prompt for r in task.heldout(n)}


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("seed", SEEDS)
def test_training_rows_never_contain_heldout_prompts(name, seed):
    task = TASKS[name]
    # 300: every task has that many distinct training prompts (`addition` has 377).
    train, evaluation = task.splits(300, 48, seed)
    assert len(train) == 300 and len(evaluation) == 48
    train_prompts = [r.prompt for r in train]
    assert len(set(train_prompts)) == len(train_prompts)
    assert not set(train_prompts) & heldout_prompts(task)
    # The eval rows are the fixed held-out rows, whatever the seed.
    assert evaluation == task.heldout(48)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_eval_larger_than_pool_is_still_excluded(name):
    task = TASKS[name]
    train, evaluation = task.splits(300, HELDOUT_POOL + 20, seed=3)
    assert not {r.prompt for r in train} & {r.prompt for r in evaluation}


def test_asking_for_more_rows_than_a_task_has_is_a_clear_error():
    # arithmetic: "add a b:" with a, b in 0..49 gives 2,500 prompts, minus the held-out pool.
    task = TASKS["arithmetic"]
    available = 2500 - HELDOUT_POOL
    train, _ = task.splits(available, 48, seed=0)
    assert len(train) == available  # every prompt outside the pool can be had
    with pytest.raises(DataError, match=rf"only {available} distinct training .*data.train_size"):
        task.splits(available + 1, 48, seed=0)
    with pytest.raises(DataError, match="only 2500 distinct held-out .*data.eval_size"):
        task.splits(10, 2501, seed=0)


@pytest.fixture(scope="module")
def tiny():
    import workbench.models.tiny

    return workbench.models.tiny


@pytest.mark.parametrize("seed", [0, 2])
def test_pretraining_corpus_has_no_heldout_prompt(tiny, seed):
    corpus = {r.prompt for r in tiny.corpus_rows(seed)}
    for task in TASKS.values():
        pool = heldout_prompts(task)
        assert len(pool) == HELDOUT_POOL
        assert not corpus & pool, task.name
    # Every task that pretrains is represented in the corpus, and no other.
    verbs = {p.split(" ")[0] for p in corpus}
    assert verbs == {verb(name) for name, task in TASKS.items() if task.pretrain}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_rows_are_deterministic_per_seed(name):
    task = TASKS[name]
    assert task.rows(50, seed=4) == task.rows(50, seed=4)
    assert task.rows(50, seed=4) != task.rows(50, seed=5)
    # A shorter request is a prefix of a longer one from the same seed.
    assert task.rows(20, seed=4) == task.rows(50, seed=4)[:20]
    assert task.heldout(10) == task.heldout(30)[:10]


def test_rows_skip_excluded_prompts():
    task = TASKS["sort"]
    first = task.rows(10, seed=0)
    excluded = {first[0].prompt, first[3].prompt}
    again = task.rows(10, seed=0, exclude=excluded)
    assert len(again) == 10
    assert not {r.prompt for r in again} & excluded


# --------------------------------------------------------------------------- answers


ADDITION_PROMPT = re.compile(r"What is (\d+) \+ (\d+)\? Answer with the number only\.")


def expected_answer(prompt: str) -> str:
    """Recompute the answer from the prompt text alone."""
    question = ADDITION_PROMPT.fullmatch(prompt)
    if question:
        a, b = (int(x) for x in question.groups())
        assert 0 <= a <= 20 and 0 <= b <= 20
        return str(a + b)
    assert prompt.endswith(":")
    verb, *args = prompt[:-1].split(" ")
    if verb == "add":
        a, b = (int(x) for x in args)
        assert len(args) == 2 and 0 <= a <= 49 and 0 <= b <= 49
        return str(a + b)
    if verb == "reverse":
        assert 3 <= len(args) <= 5 and all(len(c) == 1 and c in "abcdefghij" for c in args)
        return " ".join(args[::-1])
    if verb == "sort":
        assert 4 <= len(args) <= 6 and all(0 <= int(x) <= 99 for x in args)
        return " ".join(str(x) for x in sorted(int(x) for x in args))
    if verb in ("order", "explain"):
        lengths = range(9, 13) if verb == "order" else range(4, 7)
        assert len(args) in lengths and all(len(x) == 1 and x.isdigit() for x in args)
        counts = [args.count(str(d)) for d in range(10)]
        return " ".join(str(d) for d in range(10) for _ in range(counts[d]))
    raise AssertionError(f"unknown task prompt {prompt!r}")


def expected_explanation(prompt: str) -> str:
    """explain: one claim 'a<b' per pair of neighbouring distinct digits, after a ':'."""
    distinct = sorted({int(x) for x in prompt[:-1].split(" ")[1:]})
    assert len(distinct) >= 2
    return ": " + " ".join(f"{a}<{b}" for a, b in zip(distinct, distinct[1:]))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_are_correct(name):
    task = TASKS[name]
    rows = task.rows(200, seed=1) + task.heldout(50)
    for row in rows:
        assert row.prompt.split(" ")[0] == verb(name)
        explanation = expected_explanation(row.prompt) if name == "explain" else ""
        assert row.completion == row.answer + explanation
        assert row.answer == " " + expected_answer(row.prompt)
        assert exact_match(row.answer, row) == 1.0
        assert prefix_accuracy(row.answer, row) == 1.0


def test_sort_is_numeric_not_lexicographic():
    # Find a row whose numbers differ between numeric and string order and check it.
    for row in TASKS["sort"].rows(200, seed=0):
        numbers = row.prompt[:-1].split(" ")[1:]
        if sorted(numbers) != sorted(numbers, key=int):
            assert row.answer.split() == sorted(numbers, key=int)
            return
    pytest.fail("no row distinguishes numeric from lexicographic order")


# --------------------------------------------------------------------------- metrics

TARGET = Row.plain("order 3 1 4 2:", " 1 2 3 4")


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (" 1 2 3 4", 1.0),
        ("1 2 3 4", 1.0),
        ("  1 2 3 4\n", 1.0),
        ("1 2 3", 0.0),
        ("1 2 3 4 5", 0.0),
        ("1 2  3 4", 0.0),
        ("", 0.0),
    ],
)
def test_exact_match(prediction, expected):
    assert exact_match(prediction, TARGET) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("1 2 3 4", 4 / 4),
        ("1 2", 2 / 4),  # stopped early
        ("1 2 3 4 4 4", 4 / 6),  # ran on: divided by the longer prediction
        ("1 2 3 4 5 6 7 8", 4 / 8),
        ("1 9 3 4", 1 / 4),  # counting stops at the first mistake
        ("2 1 3 4", 0 / 4),
        ("", 0 / 4),
        (" 1\n2\t3  4 ", 4 / 4),  # items are whitespace-separated
        ("1 2 3 9 9 9 9 9 9 9", 3 / 10),
    ],
)
def test_prefix_accuracy(prediction, expected):
    assert prefix_accuracy(prediction, TARGET) == pytest.approx(expected)


def test_prefix_accuracy_with_empty_target():
    empty = Row.plain("p", "  ")
    assert prefix_accuracy("", empty) == 1.0
    assert prefix_accuracy("x", empty) == 0.0


def test_prefix_accuracy_uses_answer_segment_only():
    row = Row("p", (("answer", " 1 2"), ("explanation", " because sorted")))
    assert prefix_accuracy("1 2", row) == 1.0
    assert exact_match("1 2", row) == 1.0


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [("", 0), ("   ", 0), ("1", 1), (" 1 2 3 4", 4), ("1\n2\t3  4 5", 5), ("a,b c", 2)],
)
def test_length_items(prediction, expected):
    assert length_items(prediction, TARGET) == float(expected)


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_declarations_point_at_real_things(name):
    task = TASKS[name]
    assert task.name == name
    assert task.default_method in registry.METHODS
    assert set(task.metrics) <= set(METRICS)
    method_terms = registry.METHODS[task.default_method].terms
    for obj in task.objectives:
        assert obj.direction in ("min", "max")
        assert obj.metric in METRICS
        assert obj.term is None or obj.term in method_terms
        assert obj.weight >= 0
