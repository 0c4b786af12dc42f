"""MODPO: multi-attribute pairs whose attributes conflict, their scores from user files, and a
weight sweep whose policies move with the weights (modpo_loss's formula is tested in
test_preference_losses.py)."""

from __future__ import annotations

import json

import pytest
import torch

import workbench
from tests.conftest import fast_spec
from workbench.data.encode_pairs import collate_scored_pairs, encode_scored_pairs
from workbench.data.sources import load_rows
from workbench.data.tasks import TASKS
from workbench.spec.errors import DataError
from workbench.spec.run_spec import RunSpec


def _modpo_objectives(correctness_weight: float = 0.5) -> list[dict]:
    return [
        {
            "name": "correctness",
            "direction": "max",
            "source": "metric:prefix_accuracy",
            "term": "preference",
            "weight": correctness_weight,
            "reference": 0,
        },
        {
            "name": "length",
            "direction": "min",
            "source": "metric:length_items",
            "term": "score_margin",
            "weight": round(1 - correctness_weight, 4),
            "reference": 14,
        },
        # Held-out share of scored pairs the policy's implicit reward ranks as their labels do.
        {"name": "ranked", "direction": "max", "source": "term:reward_accuracy"},
    ]


def test_built_in_scored_pairs_conflict_and_carry_both_orders():
    """On `order`, correctness prefers the whole answer and length the cut one, in every pair;
    the label (chosen) follows correctness mostly, and the other way round sometimes."""
    spec = RunSpec.parse(fast_spec(method="modpo", objectives=_modpo_objectives()))
    train, held_out = load_rows(spec.data, 0, row_kind="scored_preference")
    assert len(train) == 200 and len(held_out) == 16
    assert load_rows(spec.data, 0, row_kind="scored_preference")[0] == train  # reproducible
    follows_correctness = 0
    for pair in train:
        scores = {name: (chosen, rejected) for name, chosen, rejected in pair.scores}
        assert set(scores) == {"correctness", "length"}
        (c_w, c_l), (len_w, len_l) = scores["correctness"], scores["length"]
        assert (c_w - c_l) * (len_w - len_l) > 0  # the more correct one is the longer one
        follows_correctness += c_w > c_l
    assert 0.5 * len(train) < follows_correctness < len(train)  # 121 of 200 (label temperature 1)


def test_user_pairs_give_their_scores_to_the_batch(tmp_path, tiny_tokenizer):
    rows = [
        {
            "prompt": "q1",
            "chosen": " a b c",
            "rejected": " a",
            "chosen_scores": {"good": 1, "short": -3},
            "rejected_scores": {"good": 0.2, "short": -1},
        },
        {
            "prompt": "q2",
            "chosen": " x",
            "rejected": " x y",
            "chosen_scores": '{"good": 0.5, "short": -1}',
            "rejected_scores": '{"good": 0.5, "short": -2}',
        },
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    spec = RunSpec.parse(
        fast_spec(
            data={"source": str(path), "eval_fraction": 0.5},
            method="modpo",
            objectives=[
                {
                    "name": "good",
                    "direction": "max",
                    "source": "term:preference",
                    "term": "preference",
                },
                {
                    "name": "short",
                    "direction": "max",
                    "source": "term:preference",
                    "term": "score_margin",
                },
            ],
        )
    )
    train, held_out = load_rows(spec.data, 0, row_kind="scored_preference")
    pairs = train + held_out
    encoded, _ = encode_scored_pairs(tiny_tokenizer, pairs, 32)
    batch = collate_scored_pairs(encoded, pad_id=0)
    by_prompt = {row.prompt: i for i, row in enumerate(pairs)}
    assert batch["score/good"][by_prompt["q1"]].tolist() == pytest.approx([1.0, 0.2])
    assert batch["score/short"][by_prompt["q2"]].tolist() == [-1.0, -2.0]
    assert batch["input_ids"].shape[0] == 8 and int(batch["n_pairs"]) == 4

    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "q", "chosen": " a", "rejected": " b"}) + "\n")
    with pytest.raises(DataError, match="chosen_scores"):
        load_rows(
            spec.data.model_copy(update={"source": str(plain)}), 0, row_kind="scored_preference"
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "rejected_scores": {"good": "high", "short": 1}}) + "\n")
    with pytest.raises(DataError, match=r"row 1.*rejected_scores\.good.*number"):
        load_rows(
            spec.data.model_copy(update={"source": str(bad)}), 0, row_kind="scored_preference"
        )


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from workbench.models.tiny import train_tokenizer

    return train_tokenizer([row for task in TASKS.values() for row in task.rows(8, seed=0)], 300)


@pytest.mark.slow
def test_a_two_point_modpo_sweep_moves_the_policy_with_the_weights(store_uri):
    """Two policies from the fast tiny base, 40 steps each: correctness trained by preference
    with weight w, length through the margin with 1 - w. Measured (w = 0.9 vs 0.1): held-out
    length 14.0 vs 1.0 items; held-out pairs ranked as their labels are 0.625 vs 0.375, i.e.
    the w = 0.9 policy ranks every pair by correctness (the labels follow correctness in 10 of
    the 16) and the w = 0.1 policy every pair by brevity. Correctness itself is 0 for both:
    the fast base barely sorts (0.08 before training), so the test checks that it does not
    rise when brevity dominates."""
    spec = RunSpec.parse(
        fast_spec(
            method={"name": "modpo", "beta": 0.1},
            objectives=_modpo_objectives(),
            optimizer={"name": "adamw", "lr": 3e-3},
            train={"steps": 40, "batch_size": 16, "eval_every": 40},
        )
    )
    sweep = workbench.run_sweep(spec, [0.9, 0.1], log=lambda *a: None)
    correct_heavy, brief_heavy = (run.objectives for run in sweep.runs)
    print("w=0.9:", correct_heavy, "w=0.1:", brief_heavy)
    assert brief_heavy["length"] <= correct_heavy["length"] - 3
    _, held_out = load_rows(spec.data, 0, row_kind="scored_preference")
    follows = sum(c_w > c_l for (_, c_w, c_l), _ in (pair.scores for pair in held_out)) / len(
        held_out
    )
    assert correct_heavy["ranked"] >= follows - 0.07 and brief_heavy["ranked"] <= 1 - follows + 0.07
    assert brief_heavy["correctness"] <= correct_heavy["correctness"] + 0.02
    assert torch.isfinite(torch.tensor(sweep.front.hypervolume))
