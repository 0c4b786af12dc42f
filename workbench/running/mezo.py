"""MeZO: zeroth-order SGD that trains with forward passes only.

Paper: "Fine-Tuning Language Models with Just Forward Passes" (Malladi et al., 2023). Each
step draws a seed s, perturbs the trainable parameters by ``+eps z`` and ``-eps z`` with
``z ~ N(0, I)`` regenerated from s (never stored), evaluates the loss at both, and moves
along z by the finite difference:

    g = (L(theta + eps z) - L(theta - eps z)) / (2 eps)
    theta <- theta - lr * (g z + weight_decay * theta)

``E[g z] = grad L`` as eps -> 0 (exactly, for a quadratic L), so this is SGD with an
unbiased, noisy gradient estimate. Memory is inference's: no activations kept for a
backward, no gradients, no optimizer moments; each ``z`` is drawn one tensor at a time.
It trains whatever has ``requires_grad`` (all of the base, or a LoRA adapter's factors).
"""

from __future__ import annotations

import torch


class MeZO(torch.optim.Optimizer):
    """``step(closure)``: ``closure()`` returns the loss at the parameters' current values
    (called twice, with no gradient); the step returns the mean of the two losses."""

    def __init__(self, params, lr: float, eps: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.eps = eps  # one scale for every group: g is one number for the whole step

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise ValueError("MeZO.step needs a closure that returns the loss")
        # The seed comes from torch's global generator, so a seeded run (and a resumed one,
        # whose checkpoint holds that generator's state) draws the same perturbations.
        seed = int(torch.randint(0, 2**62, ()))
        self._perturb(seed, self.eps)
        loss_plus = float(closure())
        self._perturb(seed, -2.0 * self.eps)
        loss_minus = float(closure())
        self._perturb(seed, self.eps)
        projected = (loss_plus - loss_minus) / (2.0 * self.eps)
        for group, p, z in self._directions(seed):
            if group["weight_decay"]:
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
            p.add_(z, alpha=-group["lr"] * projected)
        return (loss_plus + loss_minus) / 2.0

    def _perturb(self, seed: int, scale: float) -> None:
        for _, p, z in self._directions(seed):
            p.add_(z, alpha=scale)

    def _directions(self, seed: int):
        """``(group, parameter, z)`` for each trainable parameter, ``z`` drawn from ``seed`` and
        the parameter's position, so every pass sees the same directions; one ``z`` lives at a
        time."""
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                generator = torch.Generator(device=p.device).manual_seed(seed + index)
                index += 1
                z = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                yield group, p, z
