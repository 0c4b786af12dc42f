"""Multi-objective SFT by gradient combination (``mgda-sft``): MGDA kept in a preference region.

Each micro-batch computes MO-SFT's weighted terms, their gradients over every trained parameter
(one backward pass each) and the Gram matrix of those gradients; the combination coefficients
come from :func:`workbench.methods.multi_objective.losses.pmtl_coefficients` (Pareto Multi-Task
Learning, Lin et al., 2019: the min-norm element of the hull of the terms' gradients and the
active region boundaries' gradients, Sener & Koltun's MGDA-UB solver), and the returned loss is
``sum_k c_k L_k`` with the coefficients held fixed, so Lightning's own backward, gradient
clipping, accumulation and optimizer step apply the combined direction unchanged.

The region: the spec's objective weights ``w`` give the preference ray ``u ∝ 1/w``
(:func:`workbench.methods.multi_objective.losses.preference_ray`) in the space of the terms'
values, in their own units as MO-SFT's weights scale them (relative to the first batch's values,
a term the base already fits, such as ``answer`` on ``order`` at 0.01, would blow up by orders
of magnitude and decide every angle); the method's ``neighbours`` give the rays of the regions
next to it. Held-out terms are measured as MO-SFT measures them.
"""

from __future__ import annotations

import torch

from workbench.methods.multi_objective import losses as mo_losses
from workbench.methods.sft import losses as sft_losses
from workbench.methods.sft.module import MultiObjectiveSFTModule
from workbench.spec.errors import SpecError
from workbench.spec.mlflow_names import MGDA_PREFIX


class MGDASFTModule(MultiObjectiveSFTModule):
    """MO-SFT's terms combined per step by PMTL's region-constrained min-norm direction."""

    def __init__(
        self, spec, model, tokenizer, encoded, kernel_usage=None, reference=None, **training_data
    ):
        super().__init__(spec, model, tokenizer, encoded, kernel_usage, reference, **training_data)
        self.term_names = list(self.term_weights)
        weighted = [o for o in spec.objectives if o.term is not None]
        self.preference = mo_losses.preference_ray(
            self._term_vector(weighted, [o.weight for o in weighted])
        )
        given = spec.method.neighbours
        for i, vector in enumerate(given):
            if len(vector) != len(weighted) or min(vector) < 0 or sum(vector) <= 0:
                raise SpecError(
                    f"method.neighbours[{i}] = {vector}: "
                    f"give {len(weighted)} non-negative weights, "
                    f"one per weighted objective ({', '.join(o.name for o in weighted)}), not all 0"
                )
        corners = torch.eye(len(self.term_names), dtype=torch.float64)
        rays = (
            [mo_losses.preference_ray(self._term_vector(weighted, v)) for v in given]
            if given
            else [mo_losses.preference_ray(c) for c in corners]
        )
        # The run's own preference among them bounds nothing (its G_j is 0 everywhere), so a
        # sweep can give every child its whole grid.
        rays = [r for r in rays if float((r - self.preference).norm()) > 1e-9]
        self.neighbours = (
            torch.stack(rays) if rays else torch.zeros(0, len(self.term_names), dtype=torch.float64)
        )

    def _term_vector(self, weighted, weights) -> torch.Tensor:
        """Objective weights (one per weighted objective) summed per term, in term order."""
        per_term = dict.fromkeys(self.term_names, 0.0)
        for objective, weight in zip(weighted, weights):
            per_term[objective.term] += float(weight)
        return torch.tensor([per_term[n] for n in self.term_names], dtype=torch.float64)

    def compute_losses(self, batch):
        terms = self.compute_terms(batch)
        if self._split != "train" or not torch.is_grad_enabled():
            # Held-out terms need no direction; the loss returned here is not trained on.
            return sft_losses.scalarise(
                {k: terms[k] for k in self.term_weights}, self.term_weights
            ), terms
        means = torch.stack([terms[name].mean() for name in self.term_names])
        # K numbers: solved on the CPU wherever the model trains.
        gram = self._gradient_gram(means).cpu()
        coefficients, inside = mo_losses.pmtl_coefficients(
            gram, means.detach().cpu(), self.preference, self.neighbours, self.params.active_margin
        )
        coefficients = coefficients.to(device=means.device, dtype=means.dtype)
        per_example = sum(coefficients[k] * terms[name] for k, name in enumerate(self.term_names))
        combination = coefficients.detach().cpu().double()
        metrics = {
            f"{MGDA_PREFIX}inside_region": float(inside),
            f"{MGDA_PREFIX}direction_norm": float(combination @ gram @ combination) ** 0.5,
        }
        metrics.update(
            {
                f"{MGDA_PREFIX}coefficient/{name}": float(coefficients[k])
                for k, name in enumerate(self.term_names)
            }
        )
        self.log_step_metrics(metrics)
        return per_example, terms

    def _gradient_gram(self, means: torch.Tensor) -> torch.Tensor:
        """<grad L_k, grad L_l> over every trained parameter (float64, K x K): one backward
        pass per term, keeping the graph for the combined backward that follows."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        flat = []
        for k in range(len(means)):
            grads = torch.autograd.grad(means[k], params, retain_graph=True, allow_unused=True)
            flat.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                        for g, p in zip(grads, params)
                    ]
                )
            )
        stacked = torch.stack(flat)
        return stacked @ stacked.T
