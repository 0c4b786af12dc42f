"""What a run's training steps cost on average, for the ``cost:step_s`` and
``cost:tokens_per_s`` objectives and the run-level ``cost/step_s`` and ``cost/tokens_per_s``.

An observer of the run's step events (each carries ``perf/step_s`` and ``perf/tokens_per_s``).
The first step is left out while later ones exist: it holds one-off work (the first
allocations, a compilation) that a user comparing methods does not pay again per step.
"""

from __future__ import annotations

import statistics

from workbench.running.events import RunObserver
from workbench.spec.mlflow_names import STEP_TIME_KEY, TOKENS_PER_S_KEY


class StepCostTally(RunObserver):
    def __init__(self) -> None:
        self.steps: list[tuple[int, float, float]] = []  # (step, seconds, tokens)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        seconds = metrics.get(STEP_TIME_KEY)
        if seconds is None:
            return
        tokens = metrics.get(TOKENS_PER_S_KEY, 0.0) * seconds
        self.steps.append((step, seconds, tokens if tokens == tokens else 0.0))

    def costs(self) -> dict[str, float]:
        """``step_s`` (the median step time) and ``tokens_per_s`` (tokens over time), over the
        steps after the first; empty before any step."""
        timed = self.steps[1:] or self.steps
        if not timed:
            return {}
        seconds = sum(s for _, s, _ in timed)
        return {
            "step_s": statistics.median(s for _, s, _ in timed),
            "tokens_per_s": sum(t for _, _, t in timed) / seconds if seconds > 0 else 0.0,
        }
