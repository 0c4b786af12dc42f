"""Optimizer builders the registry names (``registry.OPTIMIZERS``): ``(params, spec) -> Optimizer``.

``spec`` is the run's ``optimizer`` section; each builder reads the fields it uses.
"""

from __future__ import annotations

import torch


def build_adamw(params, spec) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def build_adam(params, spec) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def build_sgd(params, spec) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )
