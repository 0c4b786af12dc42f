"""The reference strategies of REFERENCE_KINDS: each way a module gets its reference model's
log-probs gives the base model's, whatever the policy has become."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import fast_spec
from workbench.data.encode_pairs import encode_pairs
from workbench.data.sources import load_rows
from workbench.methods import reference as references
from workbench.methods.sft.module import SFTModule
from workbench.models.adapters.applying import apply_adapter
from workbench.models.loading import load_base
from workbench.spec import registry
from workbench.spec.run_spec import RunSpec

CORRECT = {"name": "correct", "direction": "max", "source": "reward:correct", "weight": 1.0}


@pytest.fixture(scope="module")
def tiny():
    spec = RunSpec.parse(fast_spec())
    return spec, load_base(spec.model, log=lambda *a: None)


def _sequence_logps_float64(model, batch) -> torch.Tensor:
    """log p(completion | prompt) per row, from the model's logits in float64."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double()[:, :-1], dim=-1)
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(1)


def test_every_reference_kind_names_a_strategy_of_its_name():
    spec = RunSpec.parse(fast_spec())
    for name, kind in registry.REFERENCE_KINDS.items():
        assert kind.name == name and kind.summary
        strategy = registry.resolve(kind.strategy)(torch.nn.Linear(2, 2), spec.adapter)
        assert isinstance(strategy, references.Reference)
        # A full fine-tune has no adapter to switch off: adapter_disabled keeps a frozen copy.
        expected = "frozen_copy" if name == "adapter_disabled" else name
        assert strategy.name == expected


@pytest.mark.parametrize("kind", ["frozen_copy", "adapter_disabled", "precomputed"])
def test_reference_log_probs_are_the_base_models_whatever_the_way(tiny, kind):
    """After the policy has moved, each reference strategy still gives the base's log-probs."""
    spec, base = tiny
    spec = spec.updated(adapter={"name": "lora", "r": 4})
    train, _ = load_rows(spec.data, 0, row_kind="preference")
    model = copy.deepcopy(base.model)
    expected_model = copy.deepcopy(base.model).eval()
    # As a run builds it: from the base, before its adapter is applied.
    strategy = registry.resolve(registry.REFERENCE_KINDS[kind].strategy)(model, spec.adapter)
    assert strategy.name == kind
    policy = apply_adapter(model, spec.adapter)
    encoded, _ = encode_pairs(base.tokenizer, train[:6], spec.train.max_length)
    module = SFTModule(spec, policy, base.tokenizer, encoded, reference=strategy)
    module._collate_rows = registry.resolve(registry.ROW_KINDS["preference"].collate)
    strategy.prepare(module, {"train": encoded, "eval": []}, batch_size=4)
    with torch.no_grad():  # move the policy away from the base
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    items = list(enumerate(encoded))[2:5]
    batch = module.collate(items)
    got = module.reference.sequence_logps(module, batch)
    want = _sequence_logps_float64(expected_model, batch)
    assert got.shape == (6,)
    assert torch.allclose(got.double(), want, atol=1e-4)
    moved = _sequence_logps_float64(policy.eval(), batch)
    assert not torch.allclose(moved, want, atol=1e-3)  # the policy really moved


def test_no_reference_gives_none_and_a_module_gets_it_by_default(tiny):
    spec, base = tiny
    module = SFTModule(spec, copy.deepcopy(base.model), base.tokenizer, [])
    assert isinstance(module.reference, references.NoReference)
    batch = {"input_ids": torch.zeros(1, 2, dtype=torch.long)}
    assert module.reference.sequence_logps(module, batch) is None
    assert module.reference.token_logps(module, batch) is None


def test_a_run_builds_the_need_its_parameters_set():
    """GRPO declares adapter_disabled; with beta 0 its parameters need none."""
    plain = RunSpec.parse(fast_spec(data="arithmetic", method="grpo", objectives=[CORRECT]))
    assert references.build_reference(plain, torch.nn.Linear(2, 2)).name == "none"
    penalised = plain.updated(**{"method.beta": 0.04})
    # A full fine-tune: nothing to switch off, so a frozen copy of the base.
    strategy = references.build_reference(penalised, torch.nn.Linear(2, 2))
    assert strategy.name == "frozen_copy"
