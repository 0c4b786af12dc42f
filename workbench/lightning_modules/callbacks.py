"""Callbacks that connect a training run to tracking and evaluation.

Only global rank 0 logs and evaluates; other ranks train on. Logging goes through the
RunRecorder's buffer, so a step costs a dict append, not a round trip to the store.
"""

from __future__ import annotations

import lightning as L


class TrackingCallback(L.Callback):
    """Logs train metrics every ``log_every`` steps and objectives every ``eval_every`` steps.

    ``evaluate(step)`` is supplied by the runner and returns ``{name: value}`` of objectives;
    it runs the same evaluation API for every method.
    """

    def __init__(self, recorder, log_every: int, eval_every: int, evaluate, stop_flag=None):
        self.recorder = recorder
        self.log_every = log_every
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.stop_flag = stop_flag
        self.last_eval_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (batch_idx + 1) % pl_module.spec.train.grad_accum != 0:
            return
        step = trainer.global_step
        metrics = pl_module.end_of_step_metrics()  # every rank: it may all-reduce
        if trainer.is_global_zero and self.recorder is not None:
            if step % self.log_every == 0 or step == 1:
                self.recorder.log_metrics(metrics, step=step)
            if step % self.eval_every == 0 and step < pl_module.spec.train.steps:
                self.evaluate(step)
                self.last_eval_step = step
        if self.stop_flag is not None and self.stop_flag():
            raise KeyboardInterrupt
