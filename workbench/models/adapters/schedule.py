"""A schedule of which parameters train: named groups of a model's parameters, of which a
chosen few train during each period of a run's optimizer steps (HFT's stages, LISA's
periods).

An adapter with a schedule names its factory in its registry entry (``AdapterInfo.schedule``);
the runner hands the schedule to a Lightning callback
(:class:`workbench.running.callbacks.TrainableScheduleCallback`), which gives the optimizer
every parameter the schedule may train and switches the set at each step. A parameter outside
the period's set has no gradient, so the optimizer leaves it (and its moments) as they are.
The choice of a period is a pure function of its index, so a resumed run trains the same
sets as one that was never interrupted.
"""

from __future__ import annotations

from collections.abc import Callable


class TrainableSchedule:
    """``groups``: every parameter of the model under a group name; ``choose(period)``: the
    names of the groups that train during steps ``[period * steps, (period + 1) * steps)``."""

    def __init__(self, groups: dict[str, list], choose: Callable[[int], set[str]], steps: int):
        self.groups = groups
        self.choose = choose
        self.steps = steps

    def candidates(self) -> list:
        """Every parameter some period trains, each once (the optimizer holds them all)."""
        seen: dict[int, object] = {}
        for parameters in self.groups.values():
            for p in parameters:
                seen.setdefault(id(p), p)
        return list(seen.values())

    def trainable_groups(self, step: int) -> set[str]:
        """The groups that train at optimizer step ``step`` (counted from 0)."""
        return self.choose(step // self.steps)

    def apply(self, step: int) -> None:
        """Let exactly the parameters of step ``step``'s groups train."""
        chosen = self.trainable_groups(step)
        trains = {id(p) for name in chosen for p in self.groups[name]}
        for parameters in self.groups.values():
            for p in parameters:
                p.requires_grad_(id(p) in trains)


def period_rng(seed: int, period: int):
    """The random numbers of one period: seeded by the adapter's seed and the period's index
    only, so a period's choice never depends on what ran before it."""
    import random

    return random.Random(seed * 1_000_003 + period)
