"""Callbacks that connect a training run to its events and checkpoints.

Only global rank 0 evaluates and announces events; other ranks train on. Observers (the
MLflow recorder among them) buffer what they keep, so a step costs a dict append, not a
round trip to the store.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from workbench.running import checkpoints, strategies


class RunEventsCallback(L.Callback):
    """At each optimizer step: evaluate every ``eval_every`` steps, then announce the step.

    ``pipeline`` is the run (``evaluate(step)``, ``events``); None on ranks other than 0,
    which still take part in the per-step all-reduce of the metrics. ``stop_requested()``
    (a signal, or an observer's ``request_stop``) ends training with KeyboardInterrupt.
    """

    def __init__(self, pipeline, eval_every: int, stop_requested=None):
        self.pipeline = pipeline
        self.eval_every = eval_every
        self.stop_requested = stop_requested

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % pl_module.spec.train.grad_accum != 0:
            return
        step = trainer.global_step
        metrics = pl_module.end_of_step_metrics()  # every rank: it may all-reduce
        evaluating = step % self.eval_every == 0 and step < pl_module.spec.train.steps
        # Sharded weights are gathered for an evaluation by every rank together.
        full_state = (
            strategies.gather_full_state(trainer)
            if evaluating and strategies.shards_weights(pl_module.spec.train.strategy)
            else None
        )
        samples = pl_module.take_step_samples()
        if trainer.is_global_zero and self.pipeline is not None:
            # Objectives before train metrics: once a step's train/loss is in the store, so is
            # that step's evaluation (a resumed run relies on this to skip what is stored).
            if evaluating:
                self.pipeline.evaluate(step, full_state)
            if samples:
                self.pipeline.events.samples(step, samples)
            self.pipeline.events.step(step, metrics)
        if self.stop_requested is not None and self.stop_requested():
            raise KeyboardInterrupt


class CheckpointCallback(L.Callback):
    """Flushes the metrics, then saves ``last.ckpt`` every ``every`` optimizer steps, atomically.

    Flushing first means the store holds every step up to a checkpoint before the checkpoint
    exists. A run killed between the two resumes from the previous checkpoint and recomputes
    steps the store already has (the recorder skips them), so the metric history has neither
    a gap nor a duplicate. (Flushing after saving left a gap when the kill came in between.)
    """

    def __init__(self, folder: Path, every: int, recorder=None):
        self.folder, self.every, self.recorder = Path(folder), every, recorder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % pl_module.spec.train.grad_accum != 0:
            return
        step = trainer.global_step
        if step % self.every != 0 or step >= pl_module.spec.train.steps:
            return
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.recorder is not None:
                self.recorder.flush()  # this step's metrics were queued by TrackingCallback
        partial = self.folder / f"step-{step}.ckpt.partial"
        trainer.save_checkpoint(partial)  # collective under DDP: every rank calls it
        if trainer.is_global_zero:
            # Complete on every rank by now: a sharded save returns on rank 0 after all shards
            # are written.
            checkpoints.publish(partial, self.folder)


LAST_CHECKPOINT = checkpoints.LAST_CHECKPOINT
