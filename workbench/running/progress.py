"""How a run shows its progress as it trains: plain lines, or a bar on a terminal.

Both are run observers (:mod:`workbench.running.events`), so they show the workbench's own count of
optimizer steps, its loss and its evaluations, whatever trains the run.

- :class:`ProgressLines`: plain lines, flushed as they are written, that ``tail -f`` follows:
  what a background run writes to its log file (``run.log``, about 20 lines a run) and what
  ``workbench run`` prints when its output goes to a file or a pipe (one line per logged step).
- :class:`ProgressBar`: one line redrawn in place on a terminal, ``step 30/100 [=====>    ]
  loss 0.5231, 0.012 s/step, ETA 4 s``; evaluations print above it, and it stays on screen
  when the run ends.
"""

from __future__ import annotations

import sys
import time

from workbench.running.events import Evaluation, RunContext, RunObserver
from workbench.spec.mlflow_names import LOSS_KEY, STEP_TIME_KEY
from workbench.tracking.run_listing import format_duration


def evaluation_line(evaluation: Evaluation, total: int) -> str:
    """``step 50/100  evaluation: correctness=0.5, length=7`` (step 0: ``base model:``)."""
    values = ", ".join(f"{k}={v:.4g}" for k, v in evaluation.objectives.items())
    what = "base model" if evaluation.step == 0 else "evaluation"
    return f"step {evaluation.step}/{total}  {what}: {values}"


class ProgressLines(RunObserver):
    """Prints ``step S/TOTAL  loss L  T s/step  ETA E`` as the run trains, each evaluation's
    objectives, and how the run ended.

    By default about ``lines`` step lines a run (and at least one every ``every_s`` seconds of
    training); with ``log_every``, one line for every step the run logs (every ``log_every``-th
    step, the first and the last), as ``train.log_every`` says the recorder stores them.
    """

    def __init__(
        self,
        write=None,
        lines: int = 20,
        every_s: float = 30.0,
        log_every: int | None = None,
        clock=time.monotonic,
    ):
        self.write = write or (lambda line: print(line, flush=True))
        self.lines, self.every_s, self.log_every, self.clock = lines, every_s, log_every, clock
        self.total, self.every, self.last_time = 0, 1, 0.0

    def on_start(self, context: RunContext) -> None:
        self.total = context.total_steps
        self.every = max(1, self.total // self.lines)
        self.last_time = self.clock()
        resumed = (
            f", resumed from step {context.resumed_from_step}" if context.resumed_from_step else ""
        )
        self.write(f"run {context.run_id}: training {self.total} steps{resumed}")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        now = self.clock()
        if self.log_every is not None:
            if step % self.log_every and step not in (1, self.total):
                return
        elif step % self.every and step != self.total and now - self.last_time < self.every_s:
            return
        self.last_time = now
        parts = [f"step {step}/{self.total}"]
        if LOSS_KEY in metrics:
            parts.append(f"loss {metrics[LOSS_KEY]:.4g}")
        if STEP_TIME_KEY in metrics:
            parts.append(f"{metrics[STEP_TIME_KEY]:.3g} s/step")
            if step < self.total:
                parts.append(f"ETA {format_duration((self.total - step) * metrics[STEP_TIME_KEY])}")
        self.write("  ".join(parts))

    def on_evaluation(self, evaluation: Evaluation) -> None:
        self.write(evaluation_line(evaluation, self.total))

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        self.write(f"run ended {status}" + (f": {error}" if error else ""))


def bar_line(
    step: int,
    total: int,
    loss: float | None,
    step_s: float | None,
    eta_s: float | None,
    width: int = 20,
    done_s: float | None = None,
) -> str:
    """One frame of the bar: ``step 30/100 [======>             ] loss 0.5231, 0.012 s/step,
    ETA 4 s``; once the last step is done, ``done in 12 s`` instead of the ETA."""
    filled = width * min(step, total) // total if total else width
    bar = "=" * filled + (">" if filled < width else "") + " " * max(0, width - filled - 1)
    parts = [f"loss {loss:.4g}" if loss is not None else "loss -"]
    if step_s is not None:
        parts.append(f"{step_s:.3g} s/step")
    parts.append(
        f"done in {format_duration(done_s)}"
        if done_s is not None
        else f"ETA {format_duration(eta_s)}"
    )
    return f"step {step}/{total} [{bar}] " + ", ".join(parts)


class ProgressBar(RunObserver):
    """The run's own progress bar on a terminal: the workbench's step of total, the loss, the
    time per step and the ETA, redrawn in place at most every ``redraw_s`` seconds.

    The ETA is the steps left times the wall time per step since training began (so it counts
    evaluations too), or ``perf/step_s`` before two steps are done. Evaluations print on
    their own line above the bar; the last frame stays when the run ends.
    """

    def __init__(self, stream=None, redraw_s: float = 0.1, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.redraw_s, self.clock = redraw_s, clock
        self.total, self.first_step, self.started = 0, 0, None
        self.step, self.loss, self.step_s = 0, None, None
        self.shown, self.last_draw, self.finished_at = "", None, None

    def on_start(self, context: RunContext) -> None:
        self.total = context.total_steps
        self.first_step = self.step = context.resumed_from_step
        resumed = (
            f", resumed from step {context.resumed_from_step}" if context.resumed_from_step else ""
        )
        self._print(f"run {context.run_id}: training {self.total} steps{resumed}")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        now = self.clock()
        if self.started is None:
            # Counted from the end of the first step: model loading is not a training step.
            self.started, self.first_step = now, step
        self.step = step
        if step >= self.total:
            self.finished_at = now  # the final evaluation that follows is not training time
        self.loss = metrics.get(LOSS_KEY, self.loss)
        self.step_s = metrics.get(STEP_TIME_KEY, self.step_s)
        if step == self.total or self.last_draw is None or now - self.last_draw >= self.redraw_s:
            self._draw(now)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        self._print(evaluation_line(evaluation, self.total))
        if self.last_draw is not None:
            self._draw(self.clock())

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        self._clear()
        if self.last_draw is not None:
            self.stream.write(self._frame(self.clock()) + "\n")
        self.stream.write(f"run ended {status}" + (f": {error}" if error else "") + "\n")
        self.stream.flush()
        self.shown = ""

    def _frame(self, now: float) -> str:
        done = self.step - self.first_step
        finished = self.finished_at is not None
        elapsed = (
            (self.finished_at if finished else now) - self.started
            if self.started is not None
            else None
        )
        per_step = elapsed / done if elapsed and done > 0 else self.step_s
        eta = (self.total - self.step) * per_step if per_step is not None else None
        return bar_line(
            self.step, self.total, self.loss, self.step_s, eta, done_s=elapsed if finished else None
        )

    def _draw(self, now: float) -> None:
        frame = self._frame(now)
        # Spaces cover what is left of a longer previous frame.
        self.stream.write("\r" + frame.ljust(len(self.shown)))
        self.stream.flush()
        self.shown, self.last_draw = frame, now

    def _clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")

    def _print(self, line: str) -> None:
        """A line above the bar: the bar is cleared, the line printed, the bar drawn again
        by the caller."""
        self._clear()
        self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = ""
