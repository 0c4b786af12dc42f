"""Progress lines: a run observer that prints one line every few steps and at each evaluation.

What a background run writes to its log file (``run.log``), and what a terminal without a
progress bar can show: plain lines, flushed as they are written, that ``tail -f`` follows.
"""

from __future__ import annotations

import time

from workbench.events import Evaluation, RunContext, RunObserver


class ProgressLines(RunObserver):
    """Prints ``step S/TOTAL  loss L  T s/step`` about ``lines`` times a run (and at least every
    ``every_s`` seconds of training), each evaluation's objectives, and how the run ended."""

    def __init__(self, write=None, lines: int = 20, every_s: float = 30.0):
        self.write = write or (lambda line: print(line, flush=True))
        self.lines, self.every_s = lines, every_s
        self.total, self.every, self.last_time = 0, 1, 0.0

    def on_start(self, context: RunContext) -> None:
        self.total = context.total_steps
        self.every = max(1, self.total // self.lines)
        self.last_time = time.monotonic()
        resumed = f", resumed from step {context.resumed_from_step}" if context.resumed_from_step else ""
        self.write(f"run {context.run_id}: training {self.total} steps{resumed}")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        now = time.monotonic()
        if step % self.every and step != self.total and now - self.last_time < self.every_s:
            return
        self.last_time = now
        parts = [f"step {step}/{self.total}"]
        if "train/loss" in metrics:
            parts.append(f"loss {metrics['train/loss']:.4g}")
        if "perf/step_s" in metrics:
            parts.append(f"{metrics['perf/step_s']:.3g} s/step")
        self.write("  ".join(parts))

    def on_evaluation(self, evaluation: Evaluation) -> None:
        values = ", ".join(f"{k}={v:.4g}" for k, v in evaluation.objectives.items())
        what = "base model" if evaluation.step == 0 else "evaluation"
        self.write(f"step {evaluation.step}/{self.total}  {what}: {values}")

    def on_end(self, status: str, error: str | None = None, details: str | None = None) -> None:
        self.write(f"run ended {status}" + (f": {error}" if error else ""))
