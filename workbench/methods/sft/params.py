"""Parameters of multi-objective SFT (plain SFT has none: it uses ``MethodParams`` as is)."""

from __future__ import annotations

from pydantic import Field

from workbench.spec.entries import MethodParams


class MultiObjectiveSFTParams(MethodParams):
    brevity_position_scale: float = Field(
        3.0,
        gt=0,
        le=100,
        description="c in the brevity term sum_t c (t/n) -log p(eos | y_<t) / n: how much harder "
        "later positions are pushed to stop.",
    )
