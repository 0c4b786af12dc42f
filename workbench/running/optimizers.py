"""The built-in optimizers' builders (``components.OPTIMIZERS``):
``(trainable parameters, settings) -> Optimizer``, where ``settings`` is the run's
``optimizer`` section validated by the optimizer's own settings model.
"""

from __future__ import annotations

import torch


def build_adamw(params, settings) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW(params, **_adam_options(params, settings))


def build_adam(params, settings) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.Adam(params, **_adam_options(params, settings))


def _adam_options(params: list, settings) -> dict:
    fused = settings.fused
    if fused is None:
        # On CPU the fused step updates each parameter in one pass; the multi-tensor one
        # (torch's default) makes temporaries as large as the trained parameters.
        # benchmarks/train_options.py measures both. Elsewhere torch's choice stands.
        on_cpu = bool(params) and all(p.device.type == "cpu" for p in params)
        fused = True if on_cpu else None
    return {
        "lr": settings.lr,
        "betas": settings.betas,
        "eps": settings.eps,
        "weight_decay": settings.weight_decay,
        "fused": fused,
    }


def build_sgd(params, settings) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def build_mezo(params, settings) -> torch.optim.Optimizer:
    from workbench.running.mezo import MeZO

    return MeZO(params, lr=settings.lr, eps=settings.eps, weight_decay=settings.weight_decay)
