"""The MLflow recorder as a run observer: what a run announces, stored under the names in
docs/concepts.md.

``train/*``, ``perf/*`` every ``train.log_every`` steps (and step 1), ``objective/<name>``
and ``eval/<metric>`` at each evaluation, sample completions as a table artifact (those
of the held-out evaluation as ``samples/step_*.json``, those a method sampled while training
as ``samples/train_step_*.json``), the run's tags and params, its data statistics and costs
(step 0, and peak memory and time at the last step), the rows ``data.select`` kept as the
``data_selection.json`` artifact, the kernels that ran (the
``workbench.kernels`` tag and their counts), the trained model as the ``model/`` artifact,
and the run's ending (FINISHED, FAILED with its error, KILLED).
"""

from __future__ import annotations

import shutil

from workbench.running.events import Evaluation, RunObserver
from workbench.spec.errors import TrackingError
from workbench.spec.mlflow_names import (
    EVAL_PREFIX,
    OBJECTIVE_PREFIX,
    SELECTION_ARTIFACT,
    TAG_KERNELS,
)
from workbench.tracking.recorder import fallback_dir


class MlflowRecorderObserver(RunObserver):
    """Stores what a run announces with ``recorder`` (a
    :class:`~workbench.tracking.recorder.RunRecorder` of the run's MLflow run)."""

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
            {f"{OBJECTIVE_PREFIX}{k}": v for k, v in evaluation.objectives.items()}, step=step
        )
        self.recorder.log_metrics(
            {f"{EVAL_PREFIX}{k}": v for k, v in evaluation.metrics.items()}, step=step
        )
        if evaluation.samples:
            self._log_samples(evaluation.samples, f"samples/step_{step:06d}.json", step)

    def on_samples(self, step: int, rows: list[dict]) -> None:
        if rows:
            self._log_samples(rows, f"samples/train_step_{step:06d}.json", step)

    def on_tags(self, tags: dict[str, str]) -> None:
        self.recorder.set_tags(tags)

    def on_params(self, params: dict[str, str]) -> None:
        self.recorder.log_params(params)

    def on_data_statistics(self, statistics: dict[str, float]) -> None:
        self.recorder.log_metrics(statistics, step=0)

    def on_data_selection(self, record: dict) -> None:
        self.recorder.log_dict(record, SELECTION_ARTIFACT)

    def on_costs(self, step: int, costs: dict[str, float]) -> None:
        self.recorder.log_metrics(costs, step=step)

    def on_kernels(self, step: int, ran: str, counts: dict[str, float]) -> None:
        self.recorder.set_tags({TAG_KERNELS: ran})
        self.recorder.log_metrics(counts, step=step)

    def on_model(self, folder: str) -> None:
        """Log the weights as the run's ``model/`` artifact; if the store is unreachable, keep
        them in a local folder the user is told about, so the trained model is never lost."""
        try:
            self.recorder.log_artifacts(folder, "model")
        except TrackingError as err:
            run_id = self.recorder.run_id
            keep = fallback_dir(self.recorder.client.tracking_uri) / f"{run_id}-model"
            shutil.copytree(folder, keep, dirs_exist_ok=True)
            self.log(
                f"warning: the model of run {run_id} could not be stored ({err}); it was saved "
                f"to {keep}"
            )

    def on_checkpoint(self, step: int) -> None:
        self.recorder.flush()

    def _log_samples(self, rows: list[dict], artifact_file: str, step: int) -> None:
        try:
            self.recorder.log_table(rows, artifact_file)
        except TrackingError as err:
            # Sample tables are a convenience; a store outage must not stop training.
            self.log(f"note: sample completions of step {step} were not stored: {err}")

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        self.recorder.finish(status, error, details=details)
