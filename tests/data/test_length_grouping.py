"""``train.group_by_length``: batches of rows of similar length, drawn by the same samplers
(every row once an epoch, seeded, resumable, the same rank slices), and less padding."""

from __future__ import annotations

import random

import pytest
import torch

import workbench
from tests.conftest import fast_spec
from workbench import tracking
from workbench.data.batches import (
    GlobalBatchSampler,
    RepeatedRoundsSampler,
    group_by_length,
    row_length,
)
from workbench.data.encode import Encoded
from workbench.data.encode_pairs import EncodedPair, EncodedPrompt, EncodedUnpaired, collate_pairs
from workbench.methods.base import WorkbenchModule
from workbench.methods.rl.sampling import SampledCompletionsModule


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(4, 120) for _ in range(n)]


def _enc(n: int) -> Encoded:
    return Encoded(list(range(3, 3 + n)), [-100] * n, [0] * n)


def _pairs(n: int, seed: int = 0) -> list[EncodedPair]:
    """Pairs whose prompt+completion lengths vary widely (4 to 120 tokens), each side its own."""
    rng = random.Random(seed)
    return [EncodedPair(_enc(rng.randint(4, 120)), _enc(rng.randint(4, 120))) for _ in range(n)]


def _flat(batches) -> list[int]:
    return [i for batch in batches for i in batch]


@pytest.mark.parametrize("n_rows", [48, 50, 7])
def test_every_row_comes_once_an_epoch(n_rows):
    """Cut the stream of global batches into epochs of ``n_rows``: each is a permutation
    (also where the epoch's last batch is partial and completed by the next epoch's rows,
    and where one global batch is bigger than the data)."""
    sampler = GlobalBatchSampler(
        n_rows, 4, micro_steps=40, seed=1, world_size=2, lengths=_lengths(n_rows)
    )
    stream = _flat(sampler.global_batches())
    for start in range(0, len(stream) - n_rows + 1, n_rows):
        assert sorted(stream[start : start + n_rows]) == list(range(n_rows))


def test_grouping_is_seeded_and_groups_within_mega_batches():
    lengths = _lengths(400)

    def draw(seed):
        return list(GlobalBatchSampler(400, 8, micro_steps=100, seed=seed, lengths=lengths))  # noqa: E731

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert draw(3) != list(GlobalBatchSampler(400, 8, micro_steps=100, seed=3))
    # Within a batch the rows run longest first (sorted inside its mega-batch).
    for batch in draw(3):
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    # 400 rows of batch 8: mega-batches of 400 // 32 = 12 batches, so an epoch has several and
    # which rows share a batch changes between epochs.
    epochs = [draw(3)[:50], draw(3)[50:100]]
    assert {tuple(sorted(b)) for b in epochs[0]} != {tuple(sorted(b)) for b in epochs[1]}


def test_group_by_length_keeps_a_partial_last_batch_last():
    order = list(range(10))
    grouped = group_by_length(
        order, [5, 1, 9, 3, 7, 2, 8, 4, 6, 0], 4, torch.Generator().manual_seed(0)
    )
    assert sorted(grouped) == order
    # 10 rows of 4: k = 1 (10 // 16 = 0 -> 1), chunks [0..3] [4..7] [8, 9]; the last is partial.
    assert grouped[-2:] == [8, 9]
    assert {tuple(grouped[:4]), tuple(grouped[4:8])} == {(2, 0, 3, 1), (6, 4, 7, 5)}


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_serves_the_tail_of_the_uninterrupted_order(world_size):
    lengths = _lengths(60)
    for rank in range(world_size):
        whole = list(
            GlobalBatchSampler(
                60, 4, micro_steps=37, seed=2, rank=rank, world_size=world_size, lengths=lengths
            )
        )
        for start in (1, 15, 36):
            resumed = list(
                GlobalBatchSampler(
                    60,
                    4,
                    micro_steps=37,
                    seed=2,
                    rank=rank,
                    world_size=world_size,
                    start_micro_step=start,
                    lengths=lengths,
                )
            )
            assert resumed == whole[start:]


def test_ranks_partition_each_global_batch():
    """2 processes x batch 4 see the rows 1 process x batch 8 sees, rank 0 the first half."""
    lengths = _lengths(70)
    single = list(GlobalBatchSampler(70, 8, micro_steps=30, seed=5, lengths=lengths))
    ranks = [
        list(
            GlobalBatchSampler(70, 4, micro_steps=30, seed=5, rank=r, world_size=2, lengths=lengths)
        )
        for r in range(2)
    ]
    assert [a + b for a, b in zip(*ranks)] == single


def test_repeated_rounds_repeat_the_grouped_batches():
    lengths = _lengths(50)
    plain = list(GlobalBatchSampler(50, 4, micro_steps=4, seed=3, lengths=lengths))
    rounds = list(
        RepeatedRoundsSampler(
            50, 4, micro_steps=12, seed=3, round_size=2, repeats=3, lengths=lengths
        )
    )
    assert rounds == [plain[0], plain[1]] * 3 + [plain[2], plain[3]] * 3
    resumed = list(
        RepeatedRoundsSampler(
            50,
            4,
            micro_steps=12,
            seed=3,
            round_size=2,
            repeats=3,
            start_micro_step=5,
            lengths=lengths,
        )
    )
    assert resumed == rounds[5:]


def _pad_fraction(rows, sampler) -> float:
    pads = total = 0
    for batch in sampler:
        mask = collate_pairs([rows[i] for i in batch], pad_id=0)["attention_mask"]
        pads += int((mask == 0).sum())
        total += mask.numel()
    return pads / total


def test_grouping_cuts_the_padding_of_collated_pairs():
    """Pairs of 4-120 tokens a side, batch 8, one epoch: measured pad fraction 0.45 plain,
    0.29 grouped by each pair's longer side, 0.37 grouped by the sum of its sides (both sides
    pad to the batch's longest sequence, so the longer side is what to group by)."""
    rows = _pairs(400)
    lengths = [row_length(r) for r in rows]
    plain = _pad_fraction(rows, GlobalBatchSampler(400, 8, micro_steps=50, seed=0))
    grouped = _pad_fraction(
        rows, GlobalBatchSampler(400, 8, micro_steps=50, seed=0, lengths=lengths)
    )
    assert grouped < 0.75 * plain, (plain, grouped)
    sums = [len(r.chosen.input_ids) + len(r.rejected.input_ids) for r in rows]
    assert grouped < _pad_fraction(
        rows, GlobalBatchSampler(400, 8, micro_steps=50, seed=0, lengths=sums)
    )


def test_row_length_of_each_row_kind():
    assert row_length(_enc(7)) == 7
    assert row_length(EncodedPair(_enc(5), _enc(9))) == 9  # the longer side, not the sum
    assert row_length(EncodedUnpaired(_enc(6), True)) == 6
    assert row_length(EncodedPrompt([1, 2, 3], 0)) == 3
    with pytest.raises(TypeError, match="group_by_length"):
        row_length(object())


class _Module:
    """The modules' sampler methods on a spec and rows alone (no model)."""

    row_lengths = WorkbenchModule.row_lengths
    batch_lengths = WorkbenchModule.batch_lengths

    def __init__(self, spec, encoded):
        self.spec, self.encoded = spec, encoded

    def sample_reuse(self) -> int:
        return 2


@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_the_modules_group_by_their_rows_lengths_when_asked(method):
    rows = _pairs(30)
    objectives = (
        [{"name": "ok", "direction": "max", "source": "reward:correct", "weight": 1.0}]
        if method == "grpo"
        else []
    )
    build = (SampledCompletionsModule if method == "grpo" else WorkbenchModule).batch_sampler
    for on in (False, True):
        spec = workbench.RunSpec.parse(
            fast_spec(
                method=method, objectives=objectives, train={"group_by_length": on, "grad_accum": 2}
            )
        )
        sampler = build(_Module(spec, rows), rank=0, world_size=1, start_micro_step=0)
        assert sampler.lengths == (
            [max(len(r.chosen.input_ids), len(r.rejected.input_ids)) for r in rows] if on else None
        )
    assert isinstance(sampler, RepeatedRoundsSampler) == (method == "grpo")


@pytest.mark.slow
def test_a_short_dpo_run_grouped_by_length_logs_its_metrics(store_uri):
    spec = workbench.RunSpec.parse(
        fast_spec(
            method={"name": "dpo", "beta": 0.1},
            data={"source": "sort", "train_size": 48, "eval_size": 8},
            objectives=[
                {
                    "name": "accuracy",
                    "direction": "max",
                    "source": "term:reward_accuracy",
                    "reference": 0,
                }
            ],
            train={"steps": 4, "batch_size": 8, "eval_every": 4, "group_by_length": True},
        )
    )
    assert spec.train.group_by_length
    result = workbench.run(spec, log=lambda *a: None)
    client = tracking.connect()
    for key in ("train/loss", "pref/accuracy", "pref/margin", "perf/tokens_per_s"):
        assert len(client.get_metric_history(result.run_id, key)) == 4, key
    assert len(client.get_metric_history(result.run_id, "objective/accuracy")) == 2
    assert workbench.RunSpec.from_yaml(spec.to_yaml()).train.group_by_length


def test_a_batch_larger_than_the_rows_holds_each_row_once():
    # A user file of 8 rows with one held out and train.batch_size 8: every step trains on
    # the 7 rows once (as a DataLoader's batch over a smaller dataset), never a row twice.
    batches = list(GlobalBatchSampler(7, 8, micro_steps=3, seed=0))
    assert [sorted(b) for b in batches] == [list(range(7))] * 3
    two_ranks = [list(GlobalBatchSampler(7, 8, 2, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    for first, second in zip(*two_ranks):
        assert len(first) == len(second) == 3 and not set(first) & set(second)
