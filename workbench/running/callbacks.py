"""Callbacks that connect a training run to its events and checkpoints.

Only global rank 0 evaluates and announces events; other ranks train on. Observers (the
MLflow recorder among them) buffer what they keep, so a step costs a dict append, not a
round trip to the store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from workbench.methods.step import StepOutput
from workbench.models.adapters.applying import adapter_schedule
from workbench.running import checkpoints, strategies
from workbench.spec.mlflow_names import LR_KEY, STEP_TIME_KEY, TOKENS_KEY, TOKENS_PER_S_KEY


class RunEventsCallback(L.Callback):
    """At each optimizer step: average what its micro-batches measured (their
    :class:`~workbench.methods.step.StepOutput`, returned by ``training_step``), evaluate
    every ``eval_every`` steps, then announce the step.

    ``events`` (:class:`~workbench.running.events.RunEvents`) and ``evaluate(step,
    full_state)`` are the run's; both None on ranks other than 0, which still take part in
    the per-step all-reduce of the metrics and the gathers of sharded weights.
    ``stop_requested()`` (a signal, or an observer's ``request_stop``) ends training with
    KeyboardInterrupt.
    """

    def __init__(
        self,
        eval_every: int,
        events=None,
        evaluate: Callable[[int, dict | None], object] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ):
        self.eval_every = eval_every
        self.events, self.evaluate = events, evaluate
        self.stop_requested = stop_requested
        self._micro_batches: list[StepOutput] = []
        self._step_started = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._micro_batches.append(outputs["step"])
        if (batch_idx + 1) % pl_module.spec.train.grad_accum != 0:
            return
        step = trainer.global_step
        now = time.perf_counter()
        micro_batches, self._micro_batches = self._micro_batches, []
        # Every rank: the means are all-reduced.
        metrics = step_metrics(micro_batches, trainer, pl_module.device, now - self._step_started)
        self._step_started = now
        evaluating = step % self.eval_every == 0 and step < pl_module.spec.train.steps
        # Sharded weights are gathered for an evaluation by every rank together.
        full_state = (
            strategies.gather_full_state(trainer)
            if evaluating and strategies.shards_weights(pl_module.spec.train.strategy)
            else None
        )
        samples = [row for measured in micro_batches for row in measured.samples]
        if trainer.is_global_zero and self.events is not None:
            # Objectives before train metrics: once a step's train/loss is in the store, so is
            # that step's evaluation (a resumed run relies on this to skip what is stored).
            if evaluating and self.evaluate is not None:
                self.evaluate(step, full_state)
            if samples:
                self.events.samples(step, samples)
            self.events.step(step, metrics)
        if self.stop_requested is not None and self.stop_requested():
            raise KeyboardInterrupt


def step_metrics(
    micro_batches: list[StepOutput], trainer, device, step_s: float
) -> dict[str, float]:
    """The metrics of one optimizer step: each value's mean over the step's micro-batches (a
    value one micro-batch lacks counts as 0 there), the mean over ranks under DDP (so a DDP
    run's curves compare with a single process's), ``perf/step_s``, ``perf/tokens_per_s`` and
    ``train/lr``. Every rank calls it: it all-reduces."""
    totals: dict[str, float] = {}
    for measured in micro_batches:
        for name, value in measured.values().items():
            totals[name] = totals.get(name, 0.0) + value
    n = max(len(micro_batches), 1)
    names = sorted(totals)
    means = torch.tensor([totals[name] / n for name in names], dtype=torch.float64)
    if trainer.world_size > 1:
        means = trainer.strategy.reduce(means.to(device), reduce_op="mean").cpu()
    averaged = dict(zip(names, means.tolist()))
    metrics = {name: value for name, value in averaged.items() if name != TOKENS_KEY}
    tokens = averaged.get(TOKENS_KEY, 0.0) * trainer.world_size
    metrics[STEP_TIME_KEY] = step_s
    metrics[TOKENS_PER_S_KEY] = tokens / step_s if step_s > 0 else math.nan
    metrics[LR_KEY] = trainer.optimizers[0].param_groups[0]["lr"]
    return metrics


class CheckpointCallback(L.Callback):
    """Announces the checkpoint (the MLflow recorder flushes its metrics), then saves
    ``last.ckpt`` every ``every`` optimizer steps, atomically.

    Flushing first means the store holds every step up to a checkpoint before the checkpoint
    exists. A run killed between the two resumes from the previous checkpoint and recomputes
    steps the store already has (the recorder skips them), so the metric history has neither
    a gap nor a duplicate. (Flushing after saving left a gap when the kill came in between.)
    """

    def __init__(self, folder: Path, every: int, events=None):
        self.folder, self.every, self.events = Path(folder), every, events

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % pl_module.spec.train.grad_accum != 0:
            return
        step = trainer.global_step
        if step % self.every != 0 or step >= pl_module.spec.train.steps:
            return
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.events is not None:
                self.events.checkpoint(step)  # this step's metrics, announced just before
        partial = self.folder / f"step-{step}.ckpt.partial"
        trainer.save_checkpoint(partial)  # collective under DDP: every rank calls it
        if trainer.is_global_zero:
            # Complete on every rank by now: a sharded save returns on rank 0 after all shards
            # are written.
            checkpoints.publish(partial, self.folder)


LAST_CHECKPOINT = checkpoints.LAST_CHECKPOINT


class TrainableScheduleCallback(L.Callback):
    """Switches which parameters train as the run's steps go by, as the adapter's
    :class:`~workbench.models.adapters.schedule.TrainableSchedule` says (HFT's stages, LISA's
    periods).

    Every parameter the schedule may train is made trainable at ``setup``, before Lightning
    builds the optimizer, so the optimizer holds them all; before each micro-batch the
    step's set is switched on and the rest off, and a parameter with no gradient is one the
    optimizer leaves alone. A resumed run's first step picks its set from the restored step.
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def setup(self, trainer, pl_module, stage):
        for parameter in self.schedule.candidates():
            parameter.requires_grad_(True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.schedule.apply(trainer.global_step)


def adapter_callbacks(model, adapter_params) -> list[L.Callback]:
    """The callbacks the run's adapter needs: its schedule's, where it has one."""
    schedule = adapter_schedule(model, adapter_params)
    return [] if schedule is None else [TrainableScheduleCallback(schedule)]
