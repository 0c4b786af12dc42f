"""Parameters of SFT (how its loss weighs a mixture's tasks) and of multi-objective SFT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.spec.entries import MethodParams


class SFTParams(MethodParams):
    task_balance: Literal["none", "tokens", "examples"] = Field(
        "none",
        description="How the loss weighs the tasks of a mixture (data.mixture), in each "
        "micro-batch: none (every row's mean token loss counts the same, so a task weighs "
        "as many rows as it has), tokens (each task's loss is the mean over its tokens, and "
        "the tasks count equally: MFTCoder's balanced loss) or examples (each task's loss is "
        "the mean of its rows' losses, and the tasks count equally).",
    )


class MultiObjectiveSFTParams(MethodParams):
    brevity_position_scale: float = Field(
        3.0,
        gt=0,
        le=100,
        description="c in the brevity term sum_t c (t/n) -log p(eos | y_<t) / n: how much harder "
        "later positions are pushed to stop.",
    )
