"""The fused ops on every model family ``workbench.models.families`` describes, and on models
it does not: a patched model gives the unpatched model's loss and gradients, its kernel tag
says what ran, and what cannot run is left out op by op, with why.

Each family is a small random model built from its transformers config class (hidden 32,
2 layers, a vocabulary of 384; no downloads), float32. The loss is what the methods train
on: the masked mean of the label tokens' log-probs at a sampling temperature, from the
model's logits (unpatched) or from ``head_logprobs`` (patched). Norm weights are drawn
around their neutral value (Gemma's around 0, as it scales by ``1 + weight``), and the
weights are large enough that Gemma 2/3's soft cap bends the logits.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from tests.kernels.helpers import needs_triton
from workbench.models import families, kernel_patch
from workbench.models.kernel_patch import head_logprobs, patch_model
from workbench.spec.errors import SpecError

VOCAB = 384
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 64, "initializer_range": 0.3}  # fmt: skip
# name: (config class, model class, config settings, RMSNorms per decoder layer)
FAMILY_MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, 2),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"head_dim": 8}, 2),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, 2),
    # Qwen3 also normalises queries and keys: 4 per layer.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}, 4),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}, 2),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}, 2),
    # Gemma 2: pre/post attention and feed-forward norms, and a final-logit soft cap.
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               {"head_dim": 8, "final_logit_softcapping": 2.0, "query_pre_attn_scalar": 8}, 4),
    # Gemma 3 (text): those norms plus query/key norms; a cap only where the config sets one.
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               {"head_dim": 8, "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 8,
                "sliding_window": 4}, 6),
    "gemma3_nocap": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                     {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 4}, 6),
}  # fmt: skip
TEMPERATURE = 0.7
ALL_TORCH = "rms_norm=torch,swiglu=torch,fused_linear_logprobs=torch"


def build(name, seed=0, **settings):
    """A random float32 model of the family ``name`` (FAMILY_MODELS), in training mode."""
    config_class, model_class, own, _ = FAMILY_MODELS[name]
    config = getattr(transformers, config_class)(**{**COMMON, **own, **settings})
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).float().train()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "norm" in param_name:
                param.add_(0.3 * torch.randn_like(param))
    return model


def batch(seed=0, batch_size=2, length=12):
    """Token ids, an attention mask with right padding on the second row, and targets with
    the prompt (first 3 positions) and the padding ignored."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch_size, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    targets = ids[:, 1:].clone()
    targets[:, :3] = -100
    targets[mask[:, 1:] == 0] = -100
    return ids, mask, targets


def plain_loss(model, ids, mask, targets, temperature=TEMPERATURE):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    scored = targets != -100
    return -(logp * scored).sum() / scored.sum()


def fused_loss(model, usage, ids, mask, targets, temperature=TEMPERATURE):
    logp = head_logprobs(model, usage, ids, mask, [targets], temperature=temperature)[0]
    scored = targets != -100
    return -(logp * scored).sum() / scored.sum()


def check_same_training_signal(plain_model, fused_model, usage, rtol=1e-5, grad_rtol=1e-4):
    """One loss and backward each: the same loss and gradients, every patched op run once
    per norm and MLP."""
    ids, mask, targets = batch()
    before = usage.calls.copy()
    loss_fused = fused_loss(fused_model, usage, ids, mask, targets)
    usage.check_forward(before)  # every patched norm and MLP ran, once
    loss_plain = plain_loss(plain_model, ids, mask, targets)
    loss_plain.backward()
    loss_fused.backward()
    assert torch.isfinite(loss_fused)
    torch.testing.assert_close(loss_fused, loss_plain, rtol=rtol, atol=1e-6)
    plain_params = dict(plain_model.named_parameters())
    for name, param in fused_model.named_parameters():
        torch.testing.assert_close(
            param.grad, plain_params[name].grad, rtol=grad_rtol, atol=1e-6, msg=name
        )


def test_every_family_has_a_model_here():
    covered = {
        families.family_of(getattr(transformers, config_class)()).name
        for config_class, *_ in FAMILY_MODELS.values()
    }
    assert covered == {f.name for f in families.FAMILIES}


@pytest.mark.parametrize("name", list(FAMILY_MODELS))
def test_torch_kernels_train_each_family_like_the_plain_model(name):
    plain_model = build(name)
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "torch")
    per_layer = FAMILY_MODELS[name][3]
    assert usage.norms == per_layer * COMMON["num_hidden_layers"] + 1
    assert usage.mlps == COMMON["num_hidden_layers"]
    expected_cap = {"gemma2": 2.0, "gemma3": 3.0}.get(name)
    assert usage.head_softcap == expected_cap
    check_same_training_signal(plain_model, fused_model, usage)
    assert usage.tag() == ALL_TORCH
    assert usage.calls["fused_linear_logprobs"] == 1


@pytest.mark.parametrize("name", ["gemma3", "gemma2"])
def test_auto_on_a_cpu_fuses_the_head_of_a_gemma_and_says_what_it_left_out(name, monkeypatch):
    """What ``kernels: auto`` does to a Gemma 3 270M on a CPU (a 262k vocabulary): the fused
    head, soft-capped where the config caps; the elementwise ops stay plain."""
    plain_model = build(name)
    usage = patch_model(copy.deepcopy(plain_model), "auto")  # a 384 vocabulary: below 2048
    assert not usage.fuses_head and usage.norms == usage.mlps == 0
    cpu = "CPU on the system allocator: no faster than the plain op"
    assert usage.tag() == (
        f"rms_norm=off ({cpu}),swiglu=off ({cpu}),"
        f"fused_linear_logprobs=off (CPU: vocabulary {VOCAB} < 2048)"
    )
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", VOCAB)
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "auto")
    assert usage.fuses_head and usage.norms == usage.mlps == 0
    check_same_training_signal(plain_model, fused_model, usage)
    assert usage.tag() == f"rms_norm=off ({cpu}),swiglu=off ({cpu}),fused_linear_logprobs=torch"
    # On a GPU (here: told so) auto runs every op; on a CPU under mimalloc, the elementwise
    # ops too.
    assert patch_model(copy.deepcopy(plain_model), "auto", on_gpu=True).left_out == {}
    plain_model.zero_grad(set_to_none=True)  # the check above left its gradients
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "auto", allocator="mimalloc 3.4.3")
    assert usage.left_out == {} and usage.norms > 0 and usage.mlps > 0
    check_same_training_signal(plain_model, fused_model, usage)
    assert usage.tag() == ALL_TORCH


@needs_triton
# The interpreter's numpy sigmoid warns where exp overflows (GELU-tanh of gates past ~9.5).
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_triton_kernels_train_gemma2_like_the_plain_model():
    """Offset norms, GELU-tanh gates and the soft-capped head through the Triton kernels
    (the interpreter, on CPU tensors)."""
    plain_model = build("gemma2")
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "triton")
    check_same_training_signal(plain_model, fused_model, usage)
    assert usage.tag() == ALL_TORCH.replace("torch", "triton")


def test_a_family_model_whose_mlp_the_kernel_lacks_keeps_its_mlp(monkeypatch):
    """A Llama with a ReLU MLP: its norms and head are fused, its MLPs left as they are."""
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", 0)
    plain_model = build("llama", hidden_act="relu")
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "auto", allocator="mimalloc")
    check_same_training_signal(plain_model, fused_model, usage)
    assert usage.tag() == (
        "rms_norm=torch,swiglu=off (LlamaMLP's activation ReLU is not silu or gelu_tanh),"
        "fused_linear_logprobs=torch"
    )
    with pytest.raises(SpecError, match="swiglu: LlamaMLP's activation ReLU.*kernels: auto"):
        patch_model(copy.deepcopy(plain_model), "torch")


# --- models outside the family table -------------------------------------------------------


def olmo():
    config = transformers.OlmoConfig(**COMMON)
    torch.manual_seed(0)
    return transformers.OlmoForCausalLM(config).float().train()


def test_a_model_outside_the_families_gets_the_fused_head_alone(monkeypatch):
    """OLMo (no RMSNorm; its forward adds nothing to the head's logits): the head is fused
    once one forward has shown it gives the model's own logits."""
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", 0)
    plain_model = olmo()
    fused_model = copy.deepcopy(plain_model)
    usage = patch_model(fused_model, "auto", allocator="mimalloc")
    assert fused_model.training and all(m.training for m in fused_model.modules())
    check_same_training_signal(plain_model, fused_model, usage)
    why = "model type olmo is not in workbench.models.families"
    assert usage.tag() == f"rms_norm=off ({why}),swiglu=off ({why}),fused_linear_logprobs=torch"
    with pytest.raises(SpecError, match="rms_norm: model type olmo.*kernels: auto"):
        patch_model(copy.deepcopy(plain_model), "torch")


def test_a_model_whose_forward_scales_the_logits_keeps_its_head(monkeypatch):
    """Cohere multiplies its head's logits by ``logit_scale``: the fused head would not
    reproduce them, so auto leaves it out and says so."""
    monkeypatch.setattr(kernel_patch, "AUTO_CPU_HEAD_MIN_VOCAB", 0)
    config = transformers.CohereConfig(**COMMON, logit_scale=0.25)
    model = transformers.CohereForCausalLM(config).float().train()
    usage = patch_model(model, "auto")
    assert not usage.fuses_head
    assert usage.left_out["fused_linear_logprobs"] == (
        "CohereForCausalLM's forward changes the logits after lm_head"
    )
    assert model.training


def test_a_model_without_a_model_decoder_keeps_every_op():
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    usage = patch_model(model, "auto")
    why = "model type gpt2 is not in workbench.models.families"
    assert usage.tag() == (
        f"rms_norm=off ({why}),swiglu=off ({why}),"
        "fused_linear_logprobs=off (GPT2LMHeadModel has no .model decoder)"
    )
    with pytest.raises(SpecError, match="gpt2.*GPT2LMHeadModel has no .model decoder"):
        patch_model(model, "torch")
