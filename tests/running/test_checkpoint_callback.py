"""CheckpointCallback: the store holds every step up to a checkpoint before the checkpoint
exists, so a run killed at any moment resumes without a gap in its metric history."""

from __future__ import annotations

from types import SimpleNamespace

from workbench.running.callbacks import LAST_CHECKPOINT, CheckpointCallback


class Events:
    def __init__(self):
        self.order = []


class FakeRunEvents:
    def __init__(self, events):
        self.events = events

    def checkpoint(self, step):
        self.events.order.append("flush")


class FakeTrainer:
    is_global_zero = True

    def __init__(self, events, step):
        self.events, self.global_step = events, step

    def save_checkpoint(self, path):
        self.events.order.append("save")
        path.write_text("checkpoint")


def module(steps=40, grad_accum=1):
    return SimpleNamespace(
        spec=SimpleNamespace(train=SimpleNamespace(steps=steps, grad_accum=grad_accum))
    )


def test_metrics_are_flushed_before_the_checkpoint_is_written(tmp_path):
    events = Events()
    callback = CheckpointCallback(tmp_path, every=5, events=FakeRunEvents(events))
    callback.on_train_batch_end(FakeTrainer(events, step=10), module(), None, None, batch_idx=9)
    assert events.order == ["flush", "save"]
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "checkpoint"
    assert not list(tmp_path.glob("*.partial"))  # renamed into place


def test_no_checkpoint_between_intervals_mid_accumulation_or_at_the_end(tmp_path):
    events = Events()
    callback = CheckpointCallback(tmp_path, every=5, events=FakeRunEvents(events))
    callback.on_train_batch_end(FakeTrainer(events, step=7), module(), None, None, batch_idx=6)
    callback.on_train_batch_end(
        FakeTrainer(events, step=10), module(grad_accum=2), None, None, batch_idx=18
    )
    callback.on_train_batch_end(FakeTrainer(events, step=40), module(), None, None, batch_idx=39)
    assert events.order == [] and not (tmp_path / LAST_CHECKPOINT).exists()
