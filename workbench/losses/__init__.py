"""Loss functions: pure functions of tensors returning per-example values (+ metrics).

Modules never inline a loss; they call these and scalarise the terms with the objectives'
training weights (:func:`scalarise`). Grouped by family: :mod:`.supervised` (token
log-probs, completion NLL, segments, brevity), :mod:`.preference` (the DPO family, KTO,
MODPO), :mod:`.policy_gradient` (GRPO's group advantages and clipped surrogate, with
DAPO's and Dr. GRPO's aggregations) and :mod:`.multi_objective` (per-example weights, the
min-norm gradient combination of MGDA and PMTL's preference regions). Every public name is importable from
``workbench.losses`` itself.
"""

from __future__ import annotations

from workbench.losses.multi_objective import (
    min_norm_weights,
    pmtl_coefficients,
    preference_ray,
    scalarise_per_example,
)
from workbench.losses.policy_gradient import STEP_TOKEN_AGGREGATIONS, group_advantages, grpo_loss
from workbench.losses.preference import (
    asft_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    kto_kl_estimate,
    kto_loss,
    modpo_loss,
    orpo_loss,
    preference_metrics,
    robust_loss,
    rpo_loss,
    simpo_loss,
    tpo_loss,
)
from workbench.losses.supervised import (
    brevity_from_eos_logprobs,
    brevity_loss,
    label_logprobs,
    masked_mean_nll,
    scalarise,
    segment_mask,
    segment_nll,
    sequence_logps,
    sft_loss,
    token_logprobs,
)

__all__ = [
    "STEP_TOKEN_AGGREGATIONS", "asft_loss", "brevity_from_eos_logprobs", "brevity_loss", "dpo_loss", "group_advantages", "grpo_loss",
    "hinge_loss", "ipo_loss",
    "kto_kl_estimate", "kto_loss", "label_logprobs", "masked_mean_nll", "min_norm_weights", "modpo_loss",
    "orpo_loss", "pmtl_coefficients", "preference_metrics", "preference_ray", "robust_loss", "rpo_loss",
    "scalarise", "scalarise_per_example", "segment_mask", "segment_nll",
    "sequence_logps", "sft_loss", "simpo_loss", "token_logprobs", "tpo_loss",
]
