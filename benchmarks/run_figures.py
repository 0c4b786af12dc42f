"""What a benchmark child process measures about the training run inside it: its resident
memory at a moment (the baseline its peak is counted from), the clock at each optimizer step,
the time spent in one phase, and the rates they give.

Shared by the benchmark scripts, which run as ``python benchmarks/<name>.py`` and so import
this by its bare name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def rss_mb() -> float:
    """The process's resident memory now (VmRSS), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_with_weights_mb(model) -> float:
    """The resident memory once every weight of ``model`` has been read. A safetensors load
    maps the file, and its pages stay on disk until something reads them: the resident memory
    right after the load leaves the weights out, and a peak counted from it would count them
    in. Reading each weight once (a sum, under no_grad) makes them resident first."""
    import torch

    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.sum()
    return rss_mb()


def note_memory_after(owner, name: str, memory: dict, model_of=None) -> None:
    """Replace the function ``owner.<name>`` (one that loads the model) by one that stores the
    resident memory in ``memory["baseline_mb"]`` once it has returned; with ``model_of`` (the
    model from what the function returns), once the model's weights are resident
    (:func:`rss_with_weights_mb`)."""
    load = getattr(owner, name)

    def load_then_note(*args, **kwargs):
        loaded = load(*args, **kwargs)
        model = model_of(loaded) if model_of is not None else None
        memory["baseline_mb"] = rss_with_weights_mb(model) if model is not None else rss_mb()
        return loaded

    setattr(owner, name, load_then_note)


def throughput(
    marks: StepMarks, first: int, last: int, added_wall_s: float = 0.0, added_cpu_s: float = 0.0
) -> dict[str, float]:
    """Tokens, wall and CPU seconds of the steps ``first`` < step <= ``last``, plus time spent
    for them outside those steps (``added_*``, e.g. a precomputation's share), and their rates."""
    timed = marks.window(first, last)
    wall, cpu = timed["wall_s"] + added_wall_s, timed["cpu_s"] + added_cpu_s
    return {"tokens": timed["tokens"], "wall_s": wall, "cpu_s": cpu,
            "train_wall_s": timed["wall_s"], "tokens_per_s": timed["tokens"] / wall,
            "tokens_per_cpu_s": timed["tokens"] / cpu}  # fmt: skip


@dataclass
class StepMarks:
    """Wall clock, process CPU time and the tokens trained at the end of each optimizer step."""

    wall: dict[int, float] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    tokens: dict[int, float] = field(default_factory=dict)

    def note(self, step: int, tokens: float) -> None:
        self.wall[step], self.cpu[step] = time.perf_counter(), time.process_time()
        self.tokens[step] = tokens

    def follow(self, trainer, tokens_in: Callable[[dict], int]) -> None:
        """Mark each optimizer step of a transformers ``trainer`` with the real tokens of the
        batch its collator built for it (``tokens_in(batch)``): the collator is wrapped to count
        them, and a callback notes the step when it ends."""
        from transformers import TrainerCallback

        batch_tokens: list[int] = []
        collate = trainer.data_collator

        def collate_and_count(examples):
            batch = collate(examples)
            batch_tokens.append(tokens_in(batch))
            return batch

        marks = self

        class MarkSteps(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                marks.note(state.global_step, batch_tokens[state.global_step - 1])

        trainer.data_collator = collate_and_count
        trainer.add_callback(MarkSteps())

    def window(self, after: int, through: int) -> dict[str, float]:
        """Time and tokens of the steps ``after`` < step <= ``through``."""
        missing = [s for s in (after, through) if s not in self.wall]
        if missing:
            raise RuntimeError(f"no mark at step(s) {missing}; marked: {sorted(self.wall)}")
        return {"wall_s": self.wall[through] - self.wall[after],
                "cpu_s": self.cpu[through] - self.cpu[after],
                "tokens": sum(self.tokens[s] for s in range(after + 1, through + 1))}  # fmt: skip


@dataclass
class PhaseClock:
    """Wall and CPU seconds spent inside calls of one function (see :meth:`wrap`)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def wrap(self, function, counts=lambda *args, **kwargs: True):
        """``function`` timed into this clock whenever ``counts(*args, **kwargs)`` says so."""

        def timed(*args, **kwargs):
            if not counts(*args, **kwargs):
                return function(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.wall_s += time.perf_counter() - wall
                self.cpu_s += time.process_time() - cpu

        return timed
