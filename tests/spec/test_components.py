"""Adapters, optimizers and schedules are registered entries: a user's, registered through the
public calls, is validated by its own settings model and trains a run like a built-in."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field

import workbench
from tests.conftest import fast_spec
from workbench import tracking
from workbench.running.schedules import constant
from workbench.spec import components
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec

CALLS: dict = {"adapter": [], "optimizer": [], "schedule": []}


class HeadOnlyParams(workbench.AdapterParams):
    """Train only the last decoder layer's MLP."""

    layer: int = Field(-1, description="Decoder layer whose MLP trains.")


def apply_head_only(model, params):
    CALLS["adapter"].append(params.layer)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.layers[params.layer].mlp.parameters():
        p.requires_grad_(True)
    CALLS["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model


class SignSGDParams(workbench.OptimizerParams):
    """Steps by the sign of the gradient."""

    decay: float = Field(0.0, ge=0, description="Weight decay.")


class SignSGD(torch.optim.Optimizer):
    def __init__(self, params, lr, decay):
        super().__init__(params, {"lr": lr, "decay": decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["decay"]).add_(p.grad.sign(), alpha=-group["lr"])
        return loss


def build_sign_sgd(params, settings):
    CALLS["optimizer"].append(settings.decay)
    return SignSGD(params, lr=settings.lr, decay=settings.decay)


class HalvingParams(workbench.ScheduleParams):
    every: int = Field(2, ge=1, description="Steps between halvings.")


def halving(step, warmup, total, *, every):
    CALLS["schedule"].append(every)
    return 0.5 ** (step // every)


@pytest.fixture
def registered():
    names = {"adapter": "head-only", "optimizer": "sign-sgd", "schedule": "halving"}
    workbench.register_adapter(names["adapter"], apply=apply_head_only, params=HeadOnlyParams)
    workbench.register_optimizer(names["optimizer"], build=build_sign_sgd, params=SignSGDParams)
    workbench.register_schedule(names["schedule"], factor=halving, params=HalvingParams)
    for key in ("adapter", "optimizer", "schedule"):
        CALLS[key].clear()
    yield names
    del components.ADAPTERS[names["adapter"]]
    del components.OPTIMIZERS[names["optimizer"]]
    del components.SCHEDULERS[names["schedule"]]


def test_user_components_validate_with_their_own_settings(registered):
    spec = RunSpec.parse(
        {
            "adapter": {"name": "head-only", "layer": 0},
            "optimizer": {"name": "sign-sgd", "lr": 0.01, "decay": 0.1},
            "train": {"scheduler": {"name": "halving", "every": 3}},
        }
    )
    assert isinstance(spec.adapter, HeadOnlyParams) and spec.adapter.layer == 0
    assert isinstance(spec.optimizer, SignSGDParams) and spec.optimizer.decay == 0.1
    assert isinstance(spec.train.scheduler, HalvingParams) and spec.train.scheduler.every == 3
    assert RunSpec.from_yaml(spec.to_yaml()) == spec
    with pytest.raises(SpecError, match="optimizer.decay = -1"):
        RunSpec.parse({"optimizer": {"name": "sign-sgd", "decay": -1}})
    with pytest.raises(SpecError, match="train.scheduler.every = 0"):
        RunSpec.parse({"train": {"scheduler": {"name": "halving", "every": 0}}})


def test_registration_checks_names_and_settings_models(registered):
    with pytest.raises(ValueError, match="built-in optimizer"):
        workbench.register_optimizer("adamw", build=build_sign_sgd)
    with pytest.raises(ValueError, match="built-in adapter"):
        workbench.register_adapter("lora", apply=apply_head_only)
    with pytest.raises(ValueError, match="built-in schedule"):
        workbench.register_schedule("cosine", factor=constant)
    with pytest.raises(ValueError, match="without ':'"):
        workbench.register_schedule("a:b", factor=constant)
    with pytest.raises(TypeError, match="OptimizerParams"):
        workbench.register_optimizer("other", build=build_sign_sgd, params=HeadOnlyParams)
    # Registering a user's name again replaces it (a notebook cell run twice).
    info = workbench.register_schedule("halving", factor=halving, params=HalvingParams)
    assert components.SCHEDULERS["halving"] is info and not info.builtin


def test_a_run_trains_with_a_user_adapter_optimizer_and_schedule(registered, store_uri):
    spec = fast_spec(
        method="sft",
        adapter={"name": "head-only", "layer": -1},
        optimizer={"name": "sign-sgd", "lr": 0.01, "decay": 0.0},
        train={"steps": 4, "batch_size": 8, "eval_every": 4, "scheduler": "halving"},
    )
    result = workbench.run(spec, log=lambda *a: None)
    assert CALLS["adapter"] == [-1] and CALLS["optimizer"] == [0.0]
    assert set(CALLS["schedule"]) == {2}
    client = tracking.connect()
    lrs = [v for _, v in tracking.metric_history(client, result.run_id, "train/lr")]
    # The rate logged at a step is the one the schedule set after it (as for built-ins).
    assert lrs == pytest.approx([0.01, 0.005, 0.005, 0.0025])
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["cost/trainable_params"] == CALLS["trainable"]
