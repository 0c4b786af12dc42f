"""A new pairwise loss added from outside the package: one pure function and one entry.

The exponential loss of Generalized Preference Optimization (Tang et al., 2024),
L = exp(-beta h) with h the DPO log-ratio margin, is defined and registered here and nowhere
else: no module subclass, no file under ``workbench/`` touched. The row kind's generic
module computes the inputs the entry declares and calls the function with them and the
parameters' fields; the test checks its loss against the formula on log-probs computed
independently (float64 logits of the policy and the reference), over a few training steps,
and trains it end to end through ``workbench.run``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pydantic import Field

import workbench
from tests.conftest import fast_spec
from workbench import tracking
from workbench.methods.preference.losses import preference_metrics
from workbench.spec import registry

pytestmark = pytest.mark.slow


# -- the new method: one function, its parameters and one entry -------------------------------


def exponential_loss(
    *, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
):
    """GPO's exponential loss: L = exp(-beta h), h = rho_w - rho_l. Rewards: beta rho."""
    rho_w = policy_chosen_logps - ref_chosen_logps
    rho_l = policy_rejected_logps - ref_rejected_logps
    return torch.exp(-beta * (rho_w - rho_l)), preference_metrics(beta * rho_w, beta * rho_l)


class ExponentialParams(workbench.MethodParams):
    beta: float = Field(0.5, gt=0, description="Scale of the log-ratio margin.")


workbench.register_method(
    "exponential-test",
    loss=f"{__name__}:exponential_loss",
    loss_inputs=(
        "policy_chosen_logps",
        "policy_rejected_logps",
        "ref_chosen_logps",
        "ref_rejected_logps",
    ),
    params=ExponentialParams,
    row_kind="preference",
    reference="precomputed",
    summary="GPO's exponential loss on the DPO log-ratio margin.",
    formula="L = exp(-beta h)",
    paper="Generalized Preference Optimization (Tang et al., 2024)",
)

# -- the tests ---------------------------------------------------------------------------------


def _sequence_logps_float64(model, batch) -> torch.Tensor:
    """log p(completion | prompt) per row, from ``model``'s logits in float64."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double()[:, :-1], dim=-1)
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(1)


def test_the_entry_names_the_generic_module_and_the_package_does_not_name_the_loss():
    info = registry.METHODS["exponential-test"]
    assert info.module == registry.ROW_KINDS["preference"].loss_module
    assert registry.load_module_class("exponential-test").__name__ == "PreferencePairModule"
    assert info.terms == ("preference", "reward_accuracy", "reward_margin")
    package = Path(workbench.__file__).parent
    for path in package.rglob("*.py"):
        assert "exponential" not in path.read_text(), path


def test_its_loss_is_the_function_of_independent_log_probs_over_training_steps():
    """Three AdamW steps on a policy moved off the base: at each, the module's per-pair loss
    is exp(-beta h) of log-probs taken from float64 logits of the policy and the base."""
    from workbench.data.encode_pairs import encode_pairs
    from workbench.data.sources import load_rows
    from workbench.methods.reference import Precomputed
    from workbench.models import tiny

    spec = workbench.RunSpec.parse(
        fast_spec(
            method={"name": "exponential-test", "beta": 0.5},
            data={"source": "sort", "train_size": 12, "eval_size": 4},
        )
    )
    base, tokenizer, _ = tiny.build_or_load(spec.model.tiny, log=lambda *a: None)
    base.eval()
    policy = copy.deepcopy(base)
    rows, _ = load_rows(spec.data, 0, row_kind="preference")
    encoded, _ = encode_pairs(tokenizer, rows[:6], spec.train.max_length)
    reference = Precomputed()
    module = registry.load_module_class("exponential-test")(
        spec, policy, tokenizer, encoded, None, reference=reference
    )
    reference.prepare(module, {"train": encoded}, batch_size=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # after the reference is taken: h differs from 0
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    policy.train()
    batch = module.collate(list(enumerate(encoded)))
    n = int(batch["n_pairs"])
    ref = _sequence_logps_float64(base, batch)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        mine = _sequence_logps_float64(policy, batch)
        h = (mine[:n] - ref[:n]) - (mine[n:] - ref[n:])
        want = torch.exp(-0.5 * h)
        per_pair, terms = module.compute_losses(batch)
        torch.testing.assert_close(per_pair.double(), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(terms["reward_accuracy"].double(), (h > 0).double())
        loss = per_pair.mean()
        losses.append(float(loss))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]  # it trains


def test_it_trains_through_the_run_and_logs_its_loss(store_uri):
    """A few steps through workbench.run: the first step's logged loss is exp(0) (the policy
    is still the base its reference was precomputed from), and the loss then falls."""
    spec = workbench.RunSpec.parse(
        fast_spec(
            method={"name": "exponential-test", "beta": 0.5},
            data={"source": "sort", "train_size": 16, "eval_size": 4},
            objectives=[{"name": "accuracy", "direction": "max", "source": "term:reward_accuracy"}],
            optimizer={"name": "adamw", "lr": 3e-3},
            train={"steps": 4, "batch_size": 16, "eval_every": 4},
        )
    )
    result = workbench.run(spec, log=lambda *a: None)
    history = sorted(
        tracking.connect().get_metric_history(result.run_id, "train/loss"), key=lambda m: m.step
    )
    losses = [m.value for m in history]
    assert len(losses) == 4
    assert losses[0] == pytest.approx(1.0, abs=1e-4)
    assert losses[-1] < losses[0]
