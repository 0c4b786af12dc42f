"""A model patched with the fused ops trains like the unpatched model (same loss, gradients,
trajectory), and the run records which ops ran and how often."""

from __future__ import annotations

import copy

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec
from workbench import tracking
from workbench.data.encode import collate, encode_rows
from workbench.methods.sft.module import MultiObjectiveSFTModule, SFTModule
from workbench.models import kernel_patch
from workbench.models.adapters.applying import apply_adapter
from workbench.models.adapters.lora import LoraAdapterParams
from workbench.models.kernel_patch import patch_model
from workbench.models.loading import load_base
from workbench.running.pipeline import run
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec


def lora_on_the_head(spec):
    return LoraAdapterParams(name="lora", target_modules=["q_proj", "lm_head"])


@pytest.fixture(scope="module")
def setting():
    spec = RunSpec.parse(fast_spec())
    base = load_base(spec.model, log=lambda *a: None)
    from workbench.data.sources import load_rows

    rows, _ = load_rows(spec.data, 0)
    encoded, _ = encode_rows(base.tokenizer, rows[:6], spec.train.max_length)
    batch = collate(encoded, base.tokenizer.pad_token_id)
    return spec, base, encoded, batch


@pytest.mark.parametrize("module_class", [SFTModule, MultiObjectiveSFTModule])
@pytest.mark.parametrize("mode", ["torch", "triton"])
def test_patched_model_gives_the_same_loss_and_gradients(setting, module_class, mode):
    spec, base, encoded, batch = setting
    plain_model = copy.deepcopy(base.model).train()
    fused_model = copy.deepcopy(base.model).train()
    usage = patch_model(fused_model, mode)
    # Each module with its own method's settings (the fast spec's method is mo-sft).
    if module_class is SFTModule:
        spec = RunSpec.parse(fast_spec(method="sft"))
    plain = module_class(spec, plain_model, base.tokenizer, encoded)
    fused = module_class(spec, fused_model, base.tokenizer, encoded, usage)
    loss_plain = plain.compute_losses(batch)[0].mean()
    loss_fused = fused.compute_losses(batch)[0].mean()
    loss_plain.backward()
    loss_fused.backward()
    assert torch.isfinite(loss_fused)
    torch.testing.assert_close(loss_fused, loss_plain, rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(plain_model.named_parameters(), fused_model.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    layers = base.model.config.num_hidden_layers
    assert usage.calls["rms_norm"] == 2 * layers + 1  # one forward: every norm, once
    assert usage.calls["swiglu"] == layers
    assert usage.tag().startswith(f"rms_norm={mode},swiglu={mode},fused_linear_logprobs={mode}")


def test_patching_touches_only_the_given_model(setting):
    _, base, _, _ = setting
    patched = copy.deepcopy(base.model)
    patch_model(patched, "torch")
    assert "forward" in vars(patched.model.norm)
    assert "forward" not in vars(base.model.model.norm)


def test_a_lora_adapter_on_the_head_is_refused_under_a_fused_loss(setting):
    spec, base, _, _ = setting
    adapter = lora_on_the_head(spec)
    model = apply_adapter(copy.deepcopy(base.model), adapter)
    with pytest.raises(SpecError, match="lm_head"):
        patch_model(model, "torch")


def test_torch_kernels_with_an_adapter_on_the_head_are_refused_naming_auto(setting):
    spec, base, _, _ = setting
    adapter = lora_on_the_head(spec)
    model = apply_adapter(copy.deepcopy(base.model), adapter)
    with pytest.raises(SpecError, match="lm_head.*kernels: auto"):
        patch_model(model, "torch", adapter=adapter)


def test_auto_leaves_the_head_out_under_an_adapter_on_it_and_says_why(setting, monkeypatch):
    spec, base, _, _ = setting
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", 0)
    adapter = lora_on_the_head(spec)
    model = apply_adapter(copy.deepcopy(base.model), adapter)
    usage = patch_model(model, "auto", adapter=adapter, allocator="mimalloc")
    assert not usage.fuses_head
    assert usage.left_out == {"fused_linear_logprobs": "adapter wraps lm_head"}
    model(input_ids=torch.tensor([[1, 2, 3]]))  # the other ops run
    assert (
        usage.tag()
        == "rms_norm=torch,swiglu=torch,fused_linear_logprobs=off (adapter wraps lm_head)"
    )


def test_the_tag_names_ops_that_ran_and_ops_left_out_with_why():
    usage = kernel_patch.KernelUsage(
        "auto", 2, 5, 2, left_out={"rms_norm": "r", "fused_linear_logprobs": "why"}
    )
    assert usage.tag() == "rms_norm=off (r),fused_linear_logprobs=off (why)"
    usage.record("swiglu", torch.zeros(1))
    assert usage.tag() == "rms_norm=off (r),swiglu=torch,fused_linear_logprobs=off (why)"
    assert kernel_patch.KernelUsage("torch", 2, 5, 2).tag() == "none"  # nothing ran yet


def test_auto_on_a_cpu_fuses_the_head_from_the_measured_vocabulary_up(setting, monkeypatch):
    _, base, _, _ = setting
    vocab = base.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", vocab + 1)
    usage = patch_model(copy.deepcopy(base.model), "auto")
    assert usage.left_out["fused_linear_logprobs"] == f"CPU: vocabulary {vocab} < {vocab + 1}"
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", vocab)
    assert patch_model(copy.deepcopy(base.model), "auto").fuses_head
    # On GPUs every op runs (Triton kernels), whatever the vocabulary.
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", vocab + 1)
    assert patch_model(copy.deepcopy(base.model), "auto", on_gpu=True).left_out == {}


def test_auto_is_the_default():
    assert RunSpec().kernels == "auto"


def test_a_default_run_with_lora_on_the_head_finishes_and_its_tag_says_why(store_uri, monkeypatch):
    # The elementwise ops on (as under mimalloc; this process runs on the system allocator),
    # so the run shows the other ops staying in.
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_ELEMENTWISE_ALLOCATORS", ("system", "mimalloc"))
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", 0)
    spec = fast_spec(adapter={"name": "lora", "target_modules": ["q_proj", "v_proj", "lm_head"]},
                     train={"steps": 3, "eval_every": 100})  # fmt: skip
    assert "kernels" not in spec
    result = run(spec, log=lambda *a: None)
    finished = MlflowClient(store_uri).get_run(result.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["workbench.kernels"] == (
        "rms_norm=torch,swiglu=torch,fused_linear_logprobs=off (adapter wraps lm_head)"
    )
    assert finished.data.metrics["kernels/fused_linear_logprobs_calls"] == 0


def test_triton_kernels_on_a_cpu_run_are_refused_before_it_starts(setting, monkeypatch, store_uri):
    spec, base, _, _ = setting
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as outside the tests
    with pytest.raises(SpecError, match="kernels = 'triton'.*CPU.*kernels: auto"):
        patch_model(copy.deepcopy(base.model), "triton", on_gpu=False)
    # Through the runner: a clear error and no run in the store.
    with pytest.raises(SpecError, match="CUDA GPUs"):
        run(fast_spec(kernels="triton", train={"accelerator": "cpu"}), log=lambda *a: None)
    client = MlflowClient(store_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert experiments and client.search_runs(experiments) == []


def test_fused_and_unfused_runs_follow_the_same_trajectory(store_uri):
    client = MlflowClient(store_uri)
    histories, runs = {}, {}
    for mode in ("off", "torch"):
        result = run(
            fast_spec(kernels=mode, train={"steps": 12, "eval_every": 100}), log=lambda *a: None
        )
        runs[mode] = client.get_run(result.run_id)
        histories[mode] = [
            v for _, v in tracking.metric_history(client, result.run_id, "train/loss")
        ]
    assert len(histories["torch"]) == 12
    assert histories["torch"] == pytest.approx(histories["off"], rel=1e-4)
    assert runs["off"].data.tags["workbench.kernels"].startswith("none")
    assert (
        runs["torch"].data.tags["workbench.kernels"]
        == "rms_norm=torch,swiglu=torch,fused_linear_logprobs=torch"
    )
    metrics = runs["torch"].data.metrics
    # 12 training steps (2 head calls each: labels and the end token for brevity) and the
    # norms of every training and generation forward.
    assert metrics["kernels/fused_linear_logprobs_calls"] == 24
    assert metrics["kernels/rms_norm_calls"] > 12 * 5
