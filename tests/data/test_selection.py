"""Data selectors: each keeps exactly its budget, the same rows for the same seed, and fails
in one line on a budget larger than the data or on no data; their arithmetic matches
independent references (brute-force greedy MMD, TOPSIS by hand, a real gradient step); the
confidence filter's dropped rows are mostly the corrupted ones; a run with a selector logs
its selection, its settings and ``cost/train_examples``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from tests.conftest import fast_spec
from workbench.data.corruption import corrupt_labels, corrupted_indices, dropped_row_quality
from workbench.data.selection import clusters, features
from workbench.data.selection.distribution_matching import greedy_mmd, median_gamma
from workbench.data.selection.donod import topsis
from workbench.data.selection.selecting import Candidates, budget_count, select_rows
from workbench.data.sources import load_rows
from workbench.data.tasks import TASKS
from workbench.models.loading import load_base
from workbench.running.pipeline import run
from workbench.spec import components
from workbench.spec.errors import DataError, SpecError
from workbench.spec.run_spec import RunSpec

BUILTIN_SELECTORS = [name for name, entry in components.SELECTORS.items() if entry.builtin]
# Small proxies, so every selector runs in about a second on the fast base.
QUICK = {
    "s2l": {"proxy_steps": 4, "trajectory_points": 2, "clusters": 4},
    "diversity": {"clusters": 4},
    "online-batch": {"batch": 8, "pool_factor": 2},
}


@pytest.fixture(scope="module")
def base():
    return load_base(RunSpec.parse(fast_spec()).model, log=lambda *a: None)


@pytest.fixture(scope="module")
def candidates(base):
    spec = RunSpec.parse(fast_spec(data={"source": "sort", "train_size": 48}))
    train, held_out = load_rows(spec.data, 0)
    return Candidates(train, base.model, base.tokenizer, 64, 16, "sort", held_out)


def settings(name: str, budget):
    return components.SELECTORS[name].params(name=name, budget=budget, **QUICK.get(name, {}))


@pytest.mark.parametrize("name", BUILTIN_SELECTORS)
def test_a_selector_keeps_its_budget_the_same_way_for_a_seed(name, candidates):
    before = [p.detach().clone() for p in candidates.model.parameters()]
    first = select_rows(candidates, settings(name, 0.25), seed=3)
    again = select_rows(candidates, settings(name, 0.25), seed=3)
    assert len(first.chosen) == len(set(first.chosen)) == 12  # a quarter of 48
    assert first.chosen == sorted(first.chosen) and 0 <= first.chosen[0] <= first.chosen[-1] < 48
    assert len(first.scores) == 48 and all(math.isfinite(s) for s in first.scores)
    assert (first.chosen, first.scores) == (again.chosen, again.scores)
    assert len(select_rows(candidates, settings(name, 7), seed=3).chosen) == 7
    # Scoring leaves the base as it was (proxies train copies).
    assert all(torch.equal(a, b) for a, b in zip(before, candidates.model.parameters()))


def test_the_random_baseline_changes_with_the_seed(candidates):
    chosen = {
        tuple(select_rows(candidates, settings("random", 10), seed).chosen) for seed in (0, 1)
    }
    assert len(chosen) == 2


def test_a_budget_beyond_the_data_or_no_data_fails_in_one_line(candidates):
    with pytest.raises(DataError, match=r"data.select.budget = 49: more than the 48 training rows"):
        select_rows(candidates, settings("random", 49), seed=0)
    with pytest.raises(DataError, match="the training set is empty"):
        select_rows(Candidates([]), settings("random", 0.5), seed=0)
    assert (
        budget_count(0.3, 48) == 14 and budget_count(0.001, 48) == 1 and budget_count(1.0, 9) == 9
    )
    spec = fast_spec(data={"source": "sort", "train_size": 40})
    for select, expected in (
        ({"name": "random", "budget": 41}, "data.select.budget = 41: more than the 40 training"),
        ({"name": "randon", "budget": 4}, "data.select.name = 'randon': unknown selector"),
        ({"name": "random", "budget": 1.5}, "data.select.budget = 1.5: a fraction must be in"),
        ({"name": "random", "budget": "all"}, "data.select.budget = 'all': must be a count"),
        ({"name": "s2l", "budget": 4, "clusterz": 2}, "data.select.clusterz = 2: unknown field"),
    ):
        with pytest.raises(SpecError, match=expected) as error:
            RunSpec.parse({**spec, "data": {**spec["data"], "select": select}})
        assert len(str(error.value).splitlines()) == 2  # the header and one line


def test_the_spec_round_trips_a_selection_and_noise():
    spec = RunSpec.parse(
        fast_spec(
            data={
                "source": "reverse",
                "select": {"name": "s2l", "budget": 0.3, "clusters": 3},
                "corrupt_fraction": 0.2,
            }
        )
    )
    assert RunSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.data.select.clusters == 3 and isinstance(spec.data.select.budget, float)
    assert spec.flat_params()["data.select.clusters"] == "3"
    with pytest.raises(
        SpecError,
        match="data.corrupt_fraction = 0.2: labels are corrupted in built-in tasks' rows only",
    ):
        RunSpec.parse(fast_spec(data={"source": "rows.jsonl", "corrupt_fraction": 0.2}))


def test_noise_corrupts_the_share_it_says_and_only_the_answers():
    rows = TASKS["explain"].rows(50, seed=1)
    noisy = corrupt_labels(rows, 0.3, seed=5)
    bad = corrupted_indices(50, 0.3, seed=5)
    assert len(bad) == 15 and bad == corrupted_indices(50, 0.3, seed=5)
    changed = [i for i, (a, b) in enumerate(zip(rows, noisy)) if a != b]
    assert changed == bad
    for i in bad:
        assert noisy[i].answer != rows[i].answer and noisy[i].prompt == rows[i].prompt
        assert noisy[i].segments[1] == rows[i].segments[1]  # the explanation is kept
    assert dropped_row_quality([1, 2, 3, 4], [2, 4, 9]) == {"precision": 0.5, "recall": 2 / 3}


# -- the arithmetic against independent references --------------------------------------------


def mmd_squared(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    def k(a, b):
        return math.exp(-gamma * float(((a - b) ** 2).sum()))

    xx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    yy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    xy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return xx + yy - 2 * xy


def test_greedy_mmd_adds_the_row_a_brute_force_mmd_prefers():
    rng = np.random.default_rng(0)
    pool, target = rng.normal(size=(12, 3)), rng.normal(0.7, 0.5, size=(6, 3))
    chosen, _ = greedy_mmd(pool, target, 5)
    gamma = median_gamma(np.concatenate([pool, target]))
    expected: list[int] = []
    for _ in range(5):
        left = [i for i in range(12) if i not in expected]
        expected.append(min(left, key=lambda i: mmd_squared(pool[expected + [i]], target, gamma)))
    assert chosen == sorted(expected)


def test_topsis_matches_the_textbook_computation():
    criteria = np.array([[3.0, 1.0], [1.0, 2.0], [2.0, 0.5], [0.5, 0.2]])
    weights, benefit = np.array([0.6, 0.4]), np.array([True, False])
    closeness = topsis(criteria, weights, benefit)
    for row in range(4):
        scaled = [
            [
                criteria[r][c] / math.sqrt(sum(criteria[s][c] ** 2 for s in range(4))) * weights[c]
                for c in range(2)
            ]
            for r in range(4)
        ]
        best = [max(col) if benefit[c] else min(col) for c, col in enumerate(zip(*scaled))]
        worst = [min(col) if benefit[c] else max(col) for c, col in enumerate(zip(*scaled))]
        d_best, d_worst = math.dist(scaled[row], best), math.dist(scaled[row], worst)
        assert closeness[row] == pytest.approx(d_worst / (d_best + d_worst), abs=1e-12)


@pytest.mark.parametrize(
    ("sizes", "count"), [([10, 2, 5], 9), ([4, 4, 4], 7), ([1, 1, 30], 12), ([3, 8], 11), ([6], 2)]
)
def test_balanced_quotas_fill_clusters_one_row_at_a_time(sizes, count):
    # The reference: hand out rows one at a time to the open cluster with the fewest so far
    # (ties: the larger cluster, then the first).
    expected = [0] * len(sizes)
    for _ in range(count):
        open_ = [c for c in range(len(sizes)) if expected[c] < sizes[c]]
        expected[min(open_, key=lambda c: (expected[c], -sizes[c], c))] += 1
    assert clusters.balanced_quotas(sizes, count) == expected


def test_step_statistics_are_those_of_a_real_step(base, candidates):
    rows, lr = list(candidates.rows[:3]), 0.05
    stats = features.step_stats(base.model, base.tokenizer, rows, 64)
    for i, row in enumerate(rows):
        model = copy.deepcopy(base.model).double()
        batch = next(
            features.batches(features.encode_candidates(base.tokenizer, [row], 64), 0, 1, "cpu")
        )
        target, _, mask = features.token_logprobs(model, batch)
        (-features.masked_mean(target, mask).sum()).backward()
        params = list(model.parameters())
        before = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in params))
        grad = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        after = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in params))
        assert float(stats.grad_norm[i]) == pytest.approx(grad, rel=1e-4)
        assert float(stats.norm_change(lr)[i]) == pytest.approx(after - before, rel=1e-3, abs=1e-7)


# -- the confidence filter finds corrupted rows ------------------------------------------------


@pytest.fixture(scope="module")
def knows_reverse(base):
    """The fast base after a short fine-tune on clean `reverse` rows of a seed of their own: a
    base that has learnt the task, as a pretrained model has (the fast base's 60
    pretraining steps leave it guessing)."""
    clean = TASKS["reverse"].training_rows(400, seed=99)
    return features.train_proxy(
        base.model, base.tokenizer, clean, steps=200, batch_size=32, lr=3e-3, max_length=64, seed=0
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_confidence_filter_drops_mostly_corrupted_rows(seed, base, knows_reverse):
    spec = RunSpec.parse(
        fast_spec(data={"source": "reverse", "train_size": 100, "corrupt_fraction": 0.3})
    )
    train, held_out = load_rows(spec.data, seed)
    candidates = Candidates(train, knows_reverse, base.tokenizer, 64, 32, "reverse", held_out)
    selection = select_rows(candidates, settings("confidence", 0.7), seed)
    quality = dropped_row_quality(selection.dropped(), corrupted_indices(100, 0.3, seed))
    # Chance is 0.3 (the corrupted share); measured 0.87-0.9 over these seeds.
    assert quality["precision"] >= 0.5, quality


# -- a run with a selector ---------------------------------------------------------------------


def test_a_run_logs_its_selection_settings_and_data_budget(store_uri, tmp_path):
    spec = fast_spec(
        data={
            "source": "reverse",
            "train_size": 60,
            "select": {"name": "confidence", "budget": 0.5},
            "corrupt_fraction": 0.3,
        },
        train={"steps": 2, "batch_size": 8, "eval_every": 2, "log_every": 1},
        objectives=[
            {"name": "exact_match", "direction": "max", "source": "metric:exact_match"},
            {"name": "examples", "direction": "min", "source": "cost:train_examples"},
        ],
        tracking={"experiment": "tests", "log_model": False},
    )
    result = run(spec, log=lambda *a: None)
    client = mlflow.MlflowClient(store_uri)
    stored = client.get_run(result.run_id).data
    assert stored.params["data.select.name"] == "confidence"
    assert stored.params["data.select.budget"] == "0.5"
    assert stored.metrics["cost/train_examples"] == 30
    assert result.objectives["examples"] == 30
    path = client.download_artifacts(result.run_id, "data_selection.json", str(tmp_path))
    record = json.loads(Path(path).read_text())
    assert record["selector"] == "confidence" and record["settings"]["budget"] == 0.5
    assert len(record["chosen"]) == 30 and len(record["scores"]) == record["candidates"] == 60
    assert record["corrupted"] == corrupted_indices(60, 0.3, 0)
    dropped = sorted(set(range(60)) - set(record["chosen"]))
    quality = dropped_row_quality(dropped, record["corrupted"])
    assert stored.metrics["data/dropped_corrupted_precision"] == pytest.approx(quality["precision"])
    assert stored.metrics["data/dropped_corrupted_recall"] == pytest.approx(quality["recall"])
    # Every run logs its data budget, with or without a selector.
    plain = run(
        fast_spec(train={"steps": 1, "eval_every": 1}, tracking={"log_model": False}),
        log=lambda *a: None,
    )
    assert client.get_run(plain.run_id).data.metrics["cost/train_examples"] == 200


def test_a_user_selector_registers_and_runs(candidates):
    def every_other(candidates, count, seed, settings):
        from workbench.data.selection.selecting import Selection

        return Selection(settings.name, list(range(0, 2 * count, 2)), [0.0] * len(candidates.rows))

    components.register_selector("every-other", select=every_other, summary="even rows")
    try:
        spec = RunSpec.parse(fast_spec(data={"select": {"name": "every-other", "budget": 5}}))
        assert select_rows(candidates, spec.data.select, 0).chosen == [0, 2, 4, 6, 8]
        with pytest.raises(ValueError, match="'random' is a built-in selector"):
            components.register_selector("random", select=every_other)
    finally:
        del components.SELECTORS["every-other"]
