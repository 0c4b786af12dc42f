"""The built-in optimizers' builders (``components.OPTIMIZERS``):
``(trainable parameters, settings) -> Optimizer``, where ``settings`` is the run's
``optimizer`` section validated by the optimizer's own settings model.
"""

from __future__ import annotations

import torch


def build_adamw(params, settings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params,
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
    )


def build_adam(params, settings) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params,
        lr=settings.lr,
        betas=settings.betas,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
    )


def build_sgd(params, settings) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def build_mezo(params, settings) -> torch.optim.Optimizer:
    from workbench.running.mezo import MeZO

    return MeZO(params, lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay)
