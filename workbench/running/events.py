"""Run events: what happens during a run, for anyone who wants to watch it.

A run is a pipeline (prepare, train, evaluate, record) that announces its progress to
observers: the MLflow recorder, the CLI's progress lines, a notebook widget, a search that
prunes poor trials. Every record of a run is an event (its tags and params, its data
statistics, its costs and peak memory, the kernels that ran, its trained model), so an
observer sees all the MLflow recorder stores, and the recorder is one observer among others.
Observers subclass :class:`RunObserver` and override what they need; every method has a
no-op default. Pure Python: importing this module costs nothing.

An observer may ask the run to stop (``context.request_stop(reason)``, e.g. a pruner): the
run then ends KILLED at the next optimizer step, with the reason as its error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What an observer learns when a run starts, and its one way to act on the run."""

    run_id: str | None
    spec: Any  # the RunSpec
    total_steps: int
    resumed_from_step: int = 0
    base_name: str = ""
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the run to end (KILLED, with ``reason``) at the next optimizer step."""
        if self.stop_reason is None:
            self.stop_reason = reason


@dataclass
class Evaluation:
    """One evaluation of the run's objectives on held-out rows."""

    step: int
    objectives: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)


class RunObserver:
    """Override what you need; each hook is called on the training process (rank 0)."""

    def on_start(self, context: RunContext) -> None:
        """The run exists (its id is known) and is about to train."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """An optimizer step finished; ``metrics`` are its ``train/*``, ``perf/*`` values."""

    def on_evaluation(self, evaluation: Evaluation) -> None:
        """The objectives were measured (step 0 is the model before training)."""

    def on_samples(self, step: int, rows: list[dict]) -> None:
        """Completions a method sampled while training (GRPO, RAFT) at optimizer step
        ``step``: one dict per completion (prompt, completion, each reward, ...)."""

    def on_tags(self, tags: dict[str, str]) -> None:
        """Labels of the run (``workbench.base``, its process, ``workbench.kernels``: pending
        until the kernels that ran are known)."""

    def on_params(self, params: dict[str, str]) -> None:
        """Settings-like values fixed for the whole run (the base's task scores)."""

    def on_data_statistics(self, statistics: dict[str, float]) -> None:
        """What encoding the training rows found (``data/rows``, ``data/truncated_rows``, ...),
        before the first step."""

    def on_data_selection(self, record: dict) -> None:
        """Which training rows the run keeps (``data.select``) and which it corrupted on
        purpose (``data.corrupt_fraction``), before the first step: the selector, its
        settings, the candidates, the chosen row ids, every row's score, the corrupted ids."""

    def on_costs(self, step: int, costs: dict[str, float]) -> None:
        """What the run cost so far: ``cost/trainable_params`` and ``cost/train_examples``
        before training;
        ``perf/peak_mem_mb`` (training's high-water mark above the loaded model) and
        ``perf/train_time_s`` after it."""

    def on_kernels(self, step: int, ran: str, counts: dict[str, float]) -> None:
        """The fused kernels that ran during training (``ran``: the ``workbench.kernels`` tag)
        and their call counts, announced after training when only ops that ran are named."""

    def on_model(self, folder: str) -> None:
        """The trained model was saved to ``folder`` (weights and tokenizer), to keep; the
        folder is removed once every observer has returned."""

    def on_checkpoint(self, step: int) -> None:
        """A checkpoint of ``step`` is about to be saved: make durable what was announced so
        far (a resumed run starts from the checkpoint and expects the store to hold up to it)."""

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        """The run ended FINISHED, FAILED (``error``, ``details``: the traceback) or KILLED."""


class RunEvents:
    """Fans each event out to the observers, in order.

    An observer that raises on ``on_step`` / ``on_evaluation`` would stop training for a
    display problem; it is logged and dropped instead. ``on_start`` errors propagate (a run
    must not start half-observed), and ``on_end`` reaches every observer whatever the others do.
    """

    def __init__(self, observers: Iterable[RunObserver] = ()):
        self.observers: list[RunObserver] = list(observers)
        self.context: RunContext | None = None

    def start(self, context: RunContext) -> None:
        self.context = context
        for observer in self.observers:
            observer.on_start(context)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self._each("on_step", step, metrics)

    def evaluation(self, evaluation: Evaluation) -> None:
        self._each("on_evaluation", evaluation)

    def samples(self, step: int, rows: list[dict]) -> None:
        self._each("on_samples", step, rows)

    def tags(self, tags: dict[str, str]) -> None:
        self._each("on_tags", tags)

    def params(self, params: dict[str, str]) -> None:
        self._each("on_params", params)

    def data_statistics(self, statistics: dict[str, float]) -> None:
        self._each("on_data_statistics", statistics)

    def data_selection(self, record: dict) -> None:
        self._each("on_data_selection", record)

    def costs(self, step: int, costs: dict[str, float]) -> None:
        self._each("on_costs", step, costs)

    def kernels(self, step: int, ran: str, counts: dict[str, float]) -> None:
        self._each("on_kernels", step, ran, counts)

    def model(self, folder: str) -> None:
        self._each("on_model", folder)

    def checkpoint(self, step: int) -> None:
        self._each("on_checkpoint", step)

    def end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        first_error: BaseException | None = None
        for observer in self.observers:
            try:
                observer.on_end(status, error, details)
            except Exception as err:  # every observer must hear the end
                first_error = first_error or err
        if first_error is not None:
            raise first_error

    @property
    def stop_reason(self) -> str | None:
        return None if self.context is None else self.context.stop_reason

    def _each(self, hook: str, *args) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, hook)(*args)
            except Exception as err:
                _log.warning(
                    "run observer %r failed in %s (%s: %s); it is detached",
                    observer,
                    hook,
                    type(err).__name__,
                    err,
                )
                self.observers.remove(observer)


def observers_list(observers: RunObserver | Sequence[RunObserver] | None) -> list[RunObserver]:
    if observers is None:
        return []
    if isinstance(observers, RunObserver):
        return [observers]
    return list(observers)
