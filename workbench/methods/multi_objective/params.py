"""Parameters of the multi-objective SFT variants that build a front in a new way:
weight-conditioned training (``conditioned-sft``) and gradient combination (``mgda-sft``).
Both train the terms of ``mo-sft``, so both extend its parameters.
"""

from __future__ import annotations

from pydantic import Field

from workbench.methods.sft.params import MultiObjectiveSFTParams


class ConditionedSFTParams(MultiObjectiveSFTParams):
    """Weight-conditioned SFT: each example draws its training weights and sees them in its
    prompt; the spec's objective weights are the preference its held-out evaluation states."""

    alpha: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="Concentration of the Dirichlet the per-example training weights are drawn "
        "from: 1 is uniform over the simplex, below 1 favours its corners (one term "
        "dominating), above 1 its centre.",
    )


class MGDASFTParams(MultiObjectiveSFTParams):
    """MGDA in a preference region (PMTL): the spec's objective weights are the region's
    preference; the neighbouring preferences bound it."""

    neighbours: list[list[float]] = Field(
        default_factory=list,
        description="Training weights of the neighbouring preferences (one weight per weighted "
        "objective, in the spec's order); the run stays in the region of loss "
        "vectors closer in angle to its own preference's ray than to theirs (its own "
        "preference among them is ignored, so a sweep gives every run its whole grid). "
        "Empty: the single-objective corners of the simplex.",
    )
    active_margin: float = Field(
        1e-3,
        ge=0,
        le=1,
        description="A region boundary within this of being reached joins the min-norm problem "
        "(PMTL's epsilon), in the terms' own units.",
    )
