"""The built-in task suite: small tasks whose outputs a program can check.

Each task generates prompt/completion rows from a seed (no downloads), declares the
metrics that score a generated completion, and the objectives (direction, metric, the loss
term its training weight scales, hypervolume reference point) a run on it optimises.
Pure Python: the spec validates task names without importing torch.

``order`` is the task with genuinely conflicting objectives: its correctness is the share
of the sorted list produced in order, so stopping early (brevity) costs correctness.
``explain`` has three, in the spirit of MORepair: the sorted digits (answer) followed by an
explanation made of checkable claims, so answer correctness, explanation quality and
brevity pull against each other.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from workbench.data.rows import Row
from workbench.spec.errors import DataError


@dataclass(frozen=True)
class ObjectiveDecl:
    """An objective a task offers: measured by ``metric`` on held-out generations."""

    name: str
    direction: str  # "min" | "max"
    metric: str
    reference: float
    term: str | None = None  # loss term whose training weight this objective's weight sets
    weight: float = 1.0


def _items(text: str) -> list[str]:
    return text.split()


def exact_match(prediction: str, row: Row) -> float:
    return float(prediction.strip() == row.answer.strip())


def prefix_accuracy(prediction: str, row: Row) -> float:
    """Share of the target's items produced in order before the first mistake.

    Divided by the longer of prediction and target, so both stopping early and running on
    cost correctness.
    """
    pred, target = _items(prediction), _items(row.answer)
    if not target:
        return float(not pred)
    matched = 0
    for p, t in zip(pred, target):
        if p != t:
            break
        matched += 1
    return matched / max(len(target), len(pred))


def length_items(prediction: str, row: Row) -> float:
    """Number of whitespace-separated items generated (what brevity minimises)."""
    return float(len(_items(prediction)))


# The ``explain`` task writes its completion as " <answer>: <claim> <claim> ...", the
# answer being the sorted digits and each claim "a<b" stating that two neighbouring distinct
# values of the sorted list are in order (" 1 1 2 3: 1<2 2<3").
EXPLANATION_SEPARATOR = ":"


def answer_and_claims(text: str) -> tuple[str, list[str]]:
    """An ``explain`` completion split into its answer (before the ':') and its claims."""
    answer, _, explanation = text.partition(EXPLANATION_SEPARATOR)
    return answer, explanation.split()


def answer_accuracy(prediction: str, row: Row) -> float:
    """:func:`prefix_accuracy` of the answer part (before the ':' that opens the explanation)."""
    answer, _ = answer_and_claims(prediction)
    return prefix_accuracy(answer, row)


def explanation_f1(prediction: str, row: Row) -> float:
    """F1 of the explanation's claims against the reference explanation's claims.

    Precision is the share of the generated claims that are true and needed (each reference
    claim counts once, so repeating a claim or stating a false one lowers it); recall the
    share of the reference claims stated. 0 when there is no explanation.
    """
    _, claims = answer_and_claims(prediction)
    reference = set(answer_and_claims(row.completion)[1])
    if not claims or not reference:
        return float(not claims and not reference)
    hits = len(set(claims) & reference)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(claims), hits / len(reference)
    return 2 * precision * recall / (precision + recall)


def final_number(prediction: str, row: Row) -> float:
    """1.0 when the last integer of the prediction is the reference answer, whatever surrounds
    it: "18 + 9 = 27." scores 1 where exact match scores 0. It tells arithmetic apart from
    answer format (a chat model restates the question before answering)."""
    numbers = re.findall(r"[+-]?\d+", prediction)
    return float(bool(numbers) and numbers[-1] == row.answer.strip())


METRICS: dict[str, Callable[[str, Row], float]] = {
    "exact_match": exact_match,
    "prefix_accuracy": prefix_accuracy,
    "length_items": length_items,
    "answer_accuracy": answer_accuracy,
    "explanation_f1": explanation_f1,
    "final_number": final_number,
}


HELDOUT_SEED = 10_000
# Prompts of the first HELDOUT_POOL held-out rows never appear in training or pretraining data.
HELDOUT_POOL = 64


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    make_row: Callable[[random.Random], Row]
    objectives: tuple[ObjectiveDecl, ...]
    default_method: str = "sft"
    metrics: tuple[str, ...] = field(default=("exact_match",))
    # Whether the tiny base pretrains on this task (workbench.models.tiny.corpus_rows). Tasks added
    # later say False, so adding one leaves the tiny base, and every cached number, as is.
    pretrain: bool = True

    def rows(self, n: int, seed: int, exclude: set[str] | None = None) -> list[Row]:
        """``n`` distinct rows from ``seed``, skipping prompts in ``exclude``."""
        rng = random.Random(f"{self.name}:{seed}")
        seen = set(exclude or ())
        out: list[Row] = []
        attempts = 0
        while len(out) < n and attempts < 50 * n + 1000:
            attempts += 1
            # Every task row is a chat exchange where the model has a chat template, and
            # names its task (a mixture of tasks tells its rows apart by it).
            row = dataclasses.replace(self.make_row(rng), conversational=True, task=self.name)
            if row.prompt in seen:
                continue
            seen.add(row.prompt)
            out.append(row)
        return out

    def heldout(self, n: int) -> list[Row]:
        """The fixed held-out rows: the first ``n`` of one seed, whatever the run's seed."""
        return self.rows(n, seed=HELDOUT_SEED)

    def training_rows(self, n_train: int, seed: int, n_eval: int = HELDOUT_POOL) -> list[Row]:
        """Up to ``n_train`` rows whose prompts are outside the held-out pool (fewer when the
        task runs out of distinct prompts)."""
        pool = {r.prompt for r in self.heldout(max(n_eval, HELDOUT_POOL))}
        return self.rows(n_train, seed=seed, exclude=pool)

    def splits(self, n_train: int, n_eval: int, seed: int) -> tuple[list[Row], list[Row]]:
        """Training rows never share a prompt with the held-out pool (nor does pretraining)."""
        eval_rows = self.heldout(n_eval)
        train_rows = self.training_rows(n_train, seed, n_eval)
        # A task has finitely many distinct prompts: say so rather than train on fewer rows
        # than the spec asked for.
        for field_name, what, got, asked in (
            ("eval_size", "held-out", len(eval_rows), n_eval),
            ("train_size", "training", len(train_rows), n_train),
        ):
            if got < asked:
                raise DataError(
                    f"has only {got} distinct {what} prompts, {asked} were asked for; "
                    f"set data.{field_name} to at most {got}",
                    source=f"task '{self.name}'",
                )
        return train_rows, eval_rows


def _arithmetic(rng: random.Random) -> Row:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return Row(f"add {a} {b}:", (("answer", f" {a + b}"),))


# Operands up to this bound: sums a 135M-parameter chat model gets right about half the time.
ADDITION_MAX = 20


def _addition(rng: random.Random) -> Row:
    a, b = rng.randint(0, ADDITION_MAX), rng.randint(0, ADDITION_MAX)
    return Row(f"What is {a} + {b}? Answer with the number only.", (("answer", f" {a + b}"),))


def _reverse(rng: random.Random) -> Row:
    word = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 5)))
    return Row(f"reverse {' '.join(word)}:", (("answer", " " + " ".join(reversed(word))),))


def _sort(rng: random.Random) -> Row:
    numbers = [rng.randint(0, 99) for _ in range(rng.randint(4, 6))]
    return Row(
        f"sort {' '.join(map(str, numbers))}:",
        (("answer", " " + " ".join(map(str, sorted(numbers)))),),
    )


def _order(rng: random.Random) -> Row:
    digits = [rng.randint(0, 9) for _ in range(rng.randint(9, 12))]
    return Row(
        f"order {' '.join(map(str, digits))}:",
        (("answer", " " + " ".join(map(str, sorted(digits)))),),
    )


def _explain(rng: random.Random) -> Row:
    digits = [rng.randint(0, 9) for _ in range(rng.randint(4, 6))]
    while len(set(digits)) < 2:  # at least one claim to explain
        digits[rng.randrange(len(digits))] = rng.randint(0, 9)
    distinct = sorted(set(digits))
    claims = " ".join(f"{a}<{b}" for a, b in zip(distinct, distinct[1:]))
    return Row(
        f"explain {' '.join(map(str, digits))}:",
        (
            ("answer", " " + " ".join(map(str, sorted(digits)))),
            ("explanation", f"{EXPLANATION_SEPARATOR} {claims}"),
        ),
    )


_EXACT = (ObjectiveDecl("exact_match", "max", "exact_match", reference=0.0, term="completion"),)

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("arithmetic", "add two numbers below 50", _arithmetic, _EXACT),
        Task("reverse", "reverse a list of 3-5 letters", _reverse, _EXACT),
        Task("sort", "sort 4-6 numbers below 100 ascending", _sort, _EXACT),
        Task(
            "order",
            "sort 9-12 digits; correctness (share of the list produced in order) against brevity",
            _order,
            (
                ObjectiveDecl(
                    "correctness",
                    "max",
                    "prefix_accuracy",
                    reference=0.0,
                    term="answer",
                    weight=0.5,
                ),
                ObjectiveDecl(
                    "length", "min", "length_items", reference=14.0, term="brevity", weight=0.5
                ),
            ),
            default_method="mo-sft",
            metrics=("prefix_accuracy", "length_items", "exact_match"),
        ),
        Task(
            "addition",
            f"add two numbers up to {ADDITION_MAX}, asked as a question (for chat models: "
            "answer with the number only)",
            _addition,
            _EXACT,
            metrics=("exact_match", "final_number"),
            pretrain=False,
        ),
        Task(
            "explain",
            "sort 4-6 digits, then explain with claims 'a<b'; answer correctness, explanation "
            "quality and brevity",
            _explain,
            (
                ObjectiveDecl(
                    "correctness",
                    "max",
                    "answer_accuracy",
                    reference=0.0,
                    term="answer",
                    weight=0.4,
                ),
                ObjectiveDecl(
                    "explanation",
                    "max",
                    "explanation_f1",
                    reference=0.0,
                    term="explanation",
                    weight=0.4,
                ),
                ObjectiveDecl(
                    "length", "min", "length_items", reference=16.0, term="brevity", weight=0.2
                ),
            ),
            default_method="mo-sft",
            metrics=("answer_accuracy", "explanation_f1", "length_items"),
            pretrain=False,
        ),
    ]
}
