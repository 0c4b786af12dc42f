"""Parameters of the preference methods: one pydantic model per method, each field documented
and named like the argument of the method's loss it sets (the generic module passes the
fields to the loss by name, ``MethodParams.loss_kwargs``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from workbench.spec.entries import MethodParams


def _beta(
    default: float,
    text: str = "Inverse temperature: how far the policy may move from the "
    "reference (larger: closer).",
) -> Any:
    return Field(default, gt=0, le=1000, description=text)


class DPOParams(MethodParams):
    beta: float = _beta(0.1)
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="eps, the assumed share of flipped labels (conservative DPO); 0: plain DPO.",
    )


class IPOParams(MethodParams):
    beta: float = _beta(0.1, "tau in the IPO paper: the target log-ratio gap is 1 / (2 beta).")
    length_normalize: bool = Field(
        False,
        description="Divide each log-ratio by its completion length first (TRL's form); "
        "false: the paper's summed log-ratios.",
    )


class HingeParams(MethodParams):
    beta: float = _beta(0.1)


class RobustDPOParams(MethodParams):
    beta: float = _beta(0.1)
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="eps, the assumed probability that a pair's labels are flipped.",
    )


class RPOParams(MethodParams):
    beta: float = _beta(0.1)
    alpha: float = Field(1.0, ge=0, description="Weight of the chosen completion's per-token NLL.")


class SimPOParams(MethodParams):
    beta: float = _beta(2.0, "Scale of the length-normalised log-likelihood reward.")
    gamma: float = Field(
        0.5, ge=0, description="Target reward margin (the paper's gamma, in reward units)."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="eps, as in conservative DPO.")


class ORPOParams(MethodParams):
    beta: float = _beta(
        0.1, "lambda in the ORPO paper: weight of the odds-ratio term against the NLL."
    )


class TPOParams(MethodParams):
    beta: float = _beta(0.01)
    alpha: float = Field(
        1.0,
        ge=0,
        description="Weight of the gold completion's per-token NLL (the gold "
        "completion is the chosen one).",
    )


class ASFTParams(MethodParams):
    beta: float = _beta(
        0.1, "lambda in the ASFT paper: weight of the absolute-likelihood alignment term."
    )


class KTOParams(MethodParams):
    beta: float = _beta(0.1)
    desirable_weight: float = Field(
        1.0, gt=0, description="lambda_D, weight of desirable completions."
    )
    undesirable_weight: float = Field(
        1.0, gt=0, description="lambda_U, weight of undesirable completions."
    )


class MODPOParams(MethodParams):
    beta: float = _beta(0.1)
