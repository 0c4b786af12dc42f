"""The peft-backed adapters on the fast tiny base: each trains only its own parameters and
lowers the held-out loss in a short run, switches off to the base exactly where it says it
can, merges into the base's weights with the adapted model's outputs (or refuses, for the
virtual-token adapters), and saves an adapter that reloads over the unchanged base.

One short direct training loop per adapter (no pipeline), about 15 s on 2 idle cores with
the base already built.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import fast_spec
from workbench.data.encode import collate, encode_rows
from workbench.data.sources import load_rows
from workbench.models.adapters.applying import (
    adapter_schedule,
    apply_adapter,
    save_trained,
    trainable_parameters,
)
from workbench.models.loading import load_base, save_merged
from workbench.running.calibration import calibration_batches
from workbench.running.export import check_mergeable
from workbench.spec.errors import ModelError, WorkbenchError
from workbench.spec.run_spec import RunSpec

STEPS = 12

# (adapter section, what every trained parameter's name holds, learning rate)
CASES = {
    "lora": ({"name": "lora", "r": 4}, ("lora_A", "lora_B"), 1e-2),
    "lora-rslora-dora": (
        {"name": "lora", "r": 4, "use_rslora": True, "use_dora": True},
        ("lora_A", "lora_B", "lora_magnitude_vector"),
        3e-3,
    ),
    "lora-pissa": ({"name": "lora", "r": 4, "init": "pissa"}, ("lora_A", "lora_B"), 3e-3),
    "lora-olora": ({"name": "lora", "r": 4, "init": "olora"}, ("lora_A", "lora_B"), 1e-3),
    "lora-eva": ({"name": "lora", "r": 4, "init": "eva"}, ("lora_A", "lora_B"), 1e-3),
    "lora-corda": ({"name": "lora", "r": 4, "init": "corda"}, ("lora_A", "lora_B"), 5e-4),
    "ia3": ({"name": "ia3"}, ("ia3_l",), 5e-2),
    "loha": ({"name": "loha", "r": 4}, ("hada_",), 1e-2),
    "lokr": ({"name": "lokr", "r": 4}, ("lokr_",), 1e-2),
    "vera": ({"name": "vera", "r": 32}, ("vera_lambda_",), 5e-2),
    "prompt_tuning": (
        {"name": "prompt_tuning", "num_virtual_tokens": 4},
        ("prompt_encoder",),
        5e-2,
    ),
    "prefix_tuning": (
        {"name": "prefix_tuning", "num_virtual_tokens": 4},
        ("prompt_encoder",),
        3e-2,
    ),
}


@pytest.fixture(scope="module")
def setting():
    """The fast base, and encoded training and held-out batches of its task."""
    spec = RunSpec.parse(fast_spec())
    base = load_base(spec.model, log=lambda *a: None)
    train_rows, eval_rows = load_rows(spec.data, 0)
    pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0
    train, _ = encode_rows(base.tokenizer, train_rows[:64], 64)
    held_out, _ = encode_rows(base.tokenizer, eval_rows[:16], 64)
    return {
        "base": base.model.eval(),
        "tokenizer": base.tokenizer,
        "train": [collate(train[i : i + 16], pad) for i in range(0, 64, 16)],
        "held_out": collate(held_out, pad),
        "calibration": calibration_batches(train, collate, pad),
    }


def loss_of(model, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the completion tokens (labels of -100 skipped)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1)
    )


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, setting):
    """An adapter applied to a copy of the base and trained for a few steps."""
    section, names, lr = CASES[request.param]
    params = RunSpec.parse(fast_spec(adapter=section)).adapter
    torch.manual_seed(0)
    model = apply_adapter(copy.deepcopy(setting["base"]), params, setting["calibration"])
    # After the adapter's set-up (PiSSA moves part of the base into it), before training.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    held_out = setting["held_out"]
    model.eval()  # no dropout: the losses compare
    with torch.no_grad():
        loss_before = loss_of(model, held_out).item()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(STEPS):
        optimizer.zero_grad()
        loss_of(model, setting["train"][step % len(setting["train"])]).backward()
        optimizer.step()
    with torch.no_grad():
        loss_after = loss_of(model, held_out).item()
    return {
        "case": request.param,
        "params": params,
        "model": model,
        "names": names,
        "before": before,
        "losses": (loss_before, loss_after),
    }


def test_only_the_adapters_parameters_train_and_the_held_out_loss_falls(trained):
    model, before = trained["model"], trained["before"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert trainable and changed == trainable
    assert all(any(part in n for part in trained["names"]) for n in trainable), sorted(trainable)
    assert trainable_parameters(model) == sum(before[n].numel() for n in trainable)
    loss_before, loss_after = trained["losses"]
    assert loss_after < loss_before - 0.01, trained["losses"]


def test_switched_off_it_is_the_base_exactly_where_it_says_it_can_be(trained, setting):
    model, held_out = trained["model"], setting["held_out"]
    base = logits_of(setting["base"], held_out)
    with model.disable_adapter():
        off = logits_of(model, held_out)
    assert torch.equal(off, base) == trained["params"].can_be_disabled()


def test_saved_adapter_reloads_over_the_unchanged_base(trained, setting, tmp_path):
    from peft import PeftModel

    model, held_out = trained["model"], setting["held_out"]
    save_trained(model, tmp_path)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(setting["base"]), tmp_path).eval()
    adapted = logits_of(model, held_out)
    # peft's own prompt-tuning model also returns a row per virtual token, first.
    again = logits_of(reloaded, held_out)[:, -adapted.shape[1] :]
    assert torch.allclose(again, adapted, atol=1e-4, rtol=1e-4)


def test_merged_weights_give_the_adapted_models_outputs_or_it_refuses(trained, setting, tmp_path):
    from transformers import AutoModelForCausalLM

    model, params, held_out = trained["model"], trained["params"], setting["held_out"]
    spec = RunSpec.parse(fast_spec(adapter=params.model_dump()))
    if not params.merges_into_weights():
        with pytest.raises(WorkbenchError, match=f"adapter '{params.name}' cannot be merged"):
            check_mergeable(spec, "r1")
        with pytest.raises(ModelError, match="cannot be merged"):
            save_merged(model, setting["tokenizer"], tmp_path)
        return
    check_mergeable(spec, "r1")
    adapted = logits_of(model, held_out)
    folder = save_merged(copy.deepcopy(model), setting["tokenizer"], tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(merged) is type(setting["base"])
    assert torch.allclose(logits_of(merged, held_out), adapted, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"name": "lora", "init": "svd"}, "adapter.init = 'svd'"),
        ({"name": "lora", "corda_method": "x"}, "adapter.corda_method = 'x'"),
        ({"name": "vera", "r": 0}, "adapter.r = 0"),
        ({"name": "loha", "module_dropout": 1.0}, "adapter.module_dropout = 1.0"),
        ({"name": "prompt_tuning", "init": "text"}, "adapter.init = 'text'"),
        ({"name": "prefix_tuning", "num_virtual_tokens": 0}, "adapter.num_virtual_tokens = 0"),
        ({"name": "ia3", "rank": 4}, "adapter.rank"),
    ],
)
def test_bad_settings_fail_naming_the_field_and_value(section, field):
    with pytest.raises(ValueError, match="invalid run spec") as err:
        RunSpec.parse(fast_spec(adapter=section))
    assert field in str(err.value)


def test_targets_missing_from_the_model_fail_naming_the_field(setting):
    params = RunSpec.parse(fast_spec(adapter={"name": "loha", "target_modules": ["c_attn"]}))
    with pytest.raises(WorkbenchError, match=r"adapter.target_modules \['c_attn'\] match no"):
        apply_adapter(copy.deepcopy(setting["base"]), params.adapter)


def test_what_each_adapter_says_of_the_fused_head_and_merging():
    def parsed(section):
        return RunSpec.parse(fast_spec(adapter=section)).adapter

    for name in ("lora", "ia3", "loha", "lokr", "vera"):
        assert parsed({"name": name}).works_with_fused_head()
        assert parsed({"name": name}).merges_into_weights()
    assert not parsed({"name": "lora", "target_modules": ["lm_head"]}).works_with_fused_head()
    for name in ("prompt_tuning", "prefix_tuning"):
        # The fused head runs the decoder on the input ids alone: the virtual tokens need
        # peft's own forward.
        assert not parsed({"name": name}).works_with_fused_head()
        assert not parsed({"name": name}).merges_into_weights()
    assert parsed({"name": "lora", "init": "eva"}).needs_calibration()
    assert not parsed({"name": "lora", "init": "pissa"}).needs_calibration()


PEFT_ADAPTERS = ("lora", "ia3", "loha", "lokr", "vera", "prompt_tuning", "prefix_tuning")


def test_the_builder_lists_each_adapter_with_its_settings(store_uri):
    from workbench.widgets.builder import ExperimentBuilder

    builder = ExperimentBuilder(fast_spec())
    assert set(PEFT_ADAPTERS) <= set(builder.adapter.options)
    builder.adapter.value = "lora"
    builder.adapter_params.controls["init"].value = "pissa"
    builder.adapter_params.controls["use_dora"].value = True
    assert builder.error == "" and builder.spec.adapter.init == "pissa"
    assert builder.spec.adapter.use_dora
    for name in PEFT_ADAPTERS[1:]:
        builder.adapter.value = name
        fields = set(RunSpec.parse(fast_spec(adapter=name)).adapter.model_fields) - {"name"}
        assert set(builder.adapter_params.controls) == fields
        assert builder.error == "" and builder.spec.adapter.name == name
    builder.adapter_params.controls["num_virtual_tokens"].value = 0
    assert "adapter.num_virtual_tokens = 0" in builder.error


# The adapters written here (tests/models/test_schedule_adapters.py on the tiny base).
WRITTEN_HERE = ("hft", "lisa", "lift", "ssf", "sparse")


@pytest.mark.slow
@pytest.mark.parametrize("name", PEFT_ADAPTERS + WRITTEN_HERE)
def test_each_adapter_kind_trains_only_its_parameters_on_the_real_model(name, real_model):
    """Two steps on one short row of the real instruct model: the adapter's parameters
    change, and no other (a schedule's first period: HFT's first half, LISA's first layers)."""
    params = RunSpec.parse({"model": "tiny", "adapter": name}).adapter
    model = apply_adapter(copy.deepcopy(real_model["model"]), params)
    schedule = adapter_schedule(model, params)
    if schedule is not None:
        schedule.apply(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    frozen_sums = {n: float(p.double().sum()) for n, p in frozen.items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        loss_of(model, real_model["batch"]).backward()
        optimizer.step()
    changed = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert changed
    assert all(float(frozen[n].double().sum()) == s for n, s in frozen_sums.items())


@pytest.fixture(scope="module")
def real_model(real_model_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model_folder)
    ids = tokenizer("What is 2 + 3? The answer is 5.", return_tensors="pt")["input_ids"]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    model = AutoModelForCausalLM.from_pretrained(real_model_folder).eval()
    return {"model": model, "batch": batch}


@pytest.mark.slow
def test_mezo_trains_a_lora_adapter_of_the_real_model_without_a_backward(real_model):
    """One MeZO step (two forward passes, no backward) moves the LoRA factors and nothing
    else, and leaves no gradient behind."""
    from workbench.running.mezo import MeZO

    params = RunSpec.parse({"model": "tiny", "adapter": "lora"}).adapter
    model = apply_adapter(copy.deepcopy(real_model["model"]), params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = MeZO([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with torch.no_grad():
        optimizer.step(lambda: loss_of(model, real_model["batch"]))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert all(p.grad is None for p in model.parameters())
