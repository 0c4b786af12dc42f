"""Merging real models: LoRA adapters against their merged full weights, and AdaMerging."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import fast_spec
from workbench.merging import adamerging, catalog, lora, state_dicts
from workbench.spec.run_spec import RunSpec

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def base():
    """The fast tiny base and its tokenizer (built once per session into the session cache)."""
    from workbench.models.loading import load_base

    loaded = load_base(RunSpec.parse(fast_spec()).model, log=lambda *a: None)
    loaded.model.eval()
    return loaded


def _adapter(model, r: int, alpha: float, seed: int, rslora: bool = False):
    """A LoRA model over a copy of ``model`` with random A and B (an adapter 'trained'
    elsewhere)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        copy.deepcopy(model),
        LoraConfig(
            r=r,
            lora_alpha=alpha,
            target_modules=TARGETS,
            init_lora_weights=False,
            use_rslora=rslora,
        ),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    return peft_model


def _state_and_config(peft_model):
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model), peft_model.peft_config["default"].to_dict()


def _logits(model, weights, batch):
    model = copy.deepcopy(model)
    state_dicts.load_weights(model, weights)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def batch(base):
    ids = [
        base.tokenizer("order 3 1 2 9 5 4 1 8 0:")["input_ids"],
        base.tokenizer("order 7 7 1 2:")["input_ids"],
    ]
    return adamerging.padded_batches(ids, base.tokenizer.pad_token_id, batch_size=2)[0]


def test_lora_deltas_equal_peft_merged_weights(base):
    model = base.model
    weights = dict(model.named_parameters())
    for r, alpha, rslora in [(4, 8.0, False), (2, 3.0, True)]:
        adapter = _adapter(model, r, alpha, seed=r, rslora=rslora)
        deltas = lora.lora_deltas(*_state_and_config(adapter))
        full = dict(adapter.merge_and_unload().named_parameters())
        assert set(deltas) == {n for n in weights if n.rsplit(".", 2)[-2] in TARGETS}
        for name, delta in deltas.items():
            torch.testing.assert_close(weights[name] + delta.float(), full[name], rtol=0, atol=1e-6)


def test_lora_adapters_merged_as_factors_equal_the_merged_full_weights(base, batch):
    """linear / task arithmetic: one concatenated adapter (rank 4 + 2) gives the outputs of the
    full models' merge, with adapters of different ranks and scales."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    model = base.model
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapters = [_adapter(model, 4, 8.0, seed=1), _adapter(model, 2, 6.0, seed=2)]
    pairs = [_state_and_config(a) for a in adapters]
    fulls = [dict(copy.deepcopy(a).merge_and_unload().named_parameters()) for a in adapters]
    vectors = [state_dicts.task_vector(weights, f) for f in fulls]
    for method, coefficients in [("task_arithmetic", [0.7, 0.4]), ("linear", [3.0, 1.0])]:
        state, changes = lora.concat_adapters(pairs, coefficients, method)
        assert changes["r"] == 6
        merged_adapter = get_peft_model(
            copy.deepcopy(model),
            LoraConfig(r=changes["r"], lora_alpha=changes["lora_alpha"], target_modules=TARGETS),
        )
        set_peft_model_state_dict(merged_adapter, state)
        merged_adapter.eval()
        with torch.no_grad():
            from_factors = merged_adapter(**batch).logits
        settings = catalog.check_settings(method, 2, coefficients)
        from_full = _logits(model, state_dicts.merge_models(weights, vectors, settings), batch)
        torch.testing.assert_close(from_factors, from_full, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="delta space only"):
        lora.concat_adapters(pairs, [1.0, 1.0], "ties")


@pytest.mark.parametrize(
    "method, options",
    [
        ("ties", {"density": 0.4}),
        ("dare_ties", {"density": 0.5, "seed": 1}),
        ("dare_linear", {"density": 0.6}),
        ("breadcrumbs", {"density": 0.5, "gamma": 0.05}),
        ("lines", {"lines_alpha": 0.3, "lines_beta": 0.7}),
    ],
)
def test_lora_adapters_merged_as_deltas_equal_the_merged_full_weights(base, batch, method, options):
    """Every method on the adapters' deltas gives the outputs of the same method on the full
    fine-tuned models (float64, so magnitude ranks and elected signs cannot differ by rounding)."""
    model = copy.deepcopy(base.model).double()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapters = [
        _adapter(model, 4, 8.0, seed=3),
        _adapter(model, 4, 4.0, seed=4),
        _adapter(model, 2, 4.0, seed=5),
    ]
    deltas = [lora.lora_deltas(*_state_and_config(a)) for a in adapters]
    fulls = [
        state_dicts.task_vector(weights, dict(a.merge_and_unload().named_parameters()))
        for a in adapters
    ]
    settings = catalog.check_settings(method, 3, [0.5, 0.8, 0.3], **options)
    from_deltas = _logits(model, state_dicts.merge_models(weights, deltas, settings), batch)
    from_full = _logits(model, state_dicts.merge_models(weights, fulls, settings), batch)
    torch.testing.assert_close(from_deltas, from_full, rtol=0, atol=1e-9)
    base_logits = _logits(model, weights, batch)
    assert (from_deltas - base_logits).abs().max() > 1e-3  # the merge changed the model


def test_adamerging_lowers_its_entropy_objective(base):
    from workbench.data.encode import prompt_ids
    from workbench.data.sources import load_rows

    spec = RunSpec.parse(fast_spec())
    train_rows, _ = load_rows(spec.data, 0)
    batches = adamerging.padded_batches(
        [prompt_ids(base.tokenizer, r) for r in train_rows[:32]],
        base.tokenizer.pad_token_id,
        batch_size=16,
    )
    model = base.model
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    vectors = [
        {
            n: 0.05 * torch.randn(w.shape, generator=g, dtype=torch.float64)
            for n, w in weights.items()
            if "layers" in n
        }
        for _ in range(2)
    ]
    result = adamerging.adamerging(model, weights, vectors, batches, steps=15, lr=0.05)
    assert result.final_entropy < result.initial_entropy - 1e-3, (
        result.initial_entropy,
        result.final_entropy,
    )
    assert result.coefficients.shape == (2, len(result.names))
    assert result.coefficients.min() >= 0 and result.coefficients.max() <= 1
    assert all(
        torch.equal(p, weights[n]) for n, p in model.named_parameters()
    )  # the model is untouched
    # The returned weights are the learned merge: their entropy is the final one.
    torch.testing.assert_close(
        adamerging.mean_entropy(model, result.weights, batches),
        result.final_entropy,
        rtol=1e-5,
        atol=1e-5,
    )
