"""The MLflow recorder as a run observer: what a run announces, stored under the names in docs/concepts.md.

``train/*``, ``perf/*`` every ``train.log_every`` steps (and step 1), ``objective/<name>``
and ``eval/<metric>`` at each evaluation, sample completions as a table artifact (those
of the held-out evaluation as ``samples/step_*.json``, those a method sampled while training
as ``samples/train_step_*.json``), and the run's ending (FINISHED, FAILED with its error, KILLED).
"""

from __future__ import annotations

from workbench.running.events import Evaluation, RunObserver
from workbench.spec.errors import TrackingError


class MlflowRecorderObserver(RunObserver):
    def __init__(self, recorder, log_every: int, log=print):
        self.recorder = recorder
        self.log_every = log_every
        self.log = log

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.log_every == 0 or step == 1:
            self.recorder.log_metrics(metrics, step=step)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        step = evaluation.step
        self.recorder.log_metrics(
            {f"objective/{k}": v for k, v in evaluation.objectives.items()}, step=step
        )
        self.recorder.log_metrics(
            {f"eval/{k}": v for k, v in evaluation.metrics.items()}, step=step
        )
        if evaluation.samples:
            self._log_samples(evaluation.samples, f"samples/step_{step:06d}.json", step)

    def on_samples(self, step: int, rows: list[dict]) -> None:
        if rows:
            self._log_samples(rows, f"samples/train_step_{step:06d}.json", step)

    def _log_samples(self, rows: list[dict], artifact_file: str, step: int) -> None:
        try:
            self.recorder.log_table(rows, artifact_file)
        except TrackingError as err:
            # Sample tables are a convenience; a store outage must not stop training.
            self.log(f"note: sample completions of step {step} were not stored: {err}")

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        self.recorder.finish(status, error, details=details)
