"""Swap a transformers causal LM's hot paths for the fused kernels, per model.

Part of the models layer (it needs transformers' module structure, so it cannot live in
``workbench.kernels``). Only the given model instance is patched (bound ``forward``
methods), never module-level functions, so patched and unpatched models can share a
process. Every patched op counts its calls as it runs; the run records which ops actually
ran, through which path, and how often.

- RMSNorm modules -> ``kernels.rms_norm``, with the family's offset and casting (Llama's
  ``weight * normed.to(dtype)``, Gemma's ``(normed * (1 + weight)).to(dtype)``);
- gated MLPs ``down_proj(act(gate) * up)`` with SiLU or GELU-tanh -> ``kernels.swiglu``;
- the loss head: training losses read per-token log-probs from
  ``kernels.fused_linear_token_logprobs`` on the last hidden states (with the model's
  final-logit soft cap, if it has one), so the batch x sequence x vocabulary logits are
  never built (see :func:`head_logprobs`).

Which norms and MLPs match is decided per family (``workbench.models.families``: Llama,
Mistral, Qwen2, Qwen3, Phi3, Gemma 1-3); the head only needs a plain ``nn.Linear`` over a
``.model`` decoder, whatever the family. ``kernels: auto`` leaves out what does not match,
op by op, naming why in the run's kernel tag; ``kernels: torch`` and ``triton`` patch every
op or refuse the run.
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import torch

from workbench.models import families
from workbench.spec.errors import SpecError
from workbench.spec.mlflow_names import KERNELS_PREFIX

OPS = ("rms_norm", "swiglu", "fused_linear_logprobs")
# Where ``kernels: auto`` runs each op on a CPU, from benchmarks/kernels_default.py
# (BENCHMARKS.md, "Kernels by default", 2 cores, float32): the fused head from this
# vocabulary size up (LoRA SFT, a 32k vocabulary: 0.52-0.53x the step time, 0.35-0.36x the
# peak memory; 2k: 0.93-1.03x, 0.84-0.88x; the tiny base's 382: no gain beyond the noise) ...
AUTO_CPU_HEAD_MIN_VOCAB = 2048
# ... and the chunked RMSNorm / SwiGLU paths only where the process runs on one of these
# allocators (the first word of workbench.running.allocator.running()). On mimalloc, what a
# workbench training process runs on, they never lost beyond the noise and won where the
# model is large enough to matter (auto with them against auto without, step time over
# off's: tiny base 1.01-1.12 against 0.92-1.15, where auto runs nothing there; 2k 1.08
# against 1.13; 32k 0.76 against 0.82, peak 0.224x against 0.238x; and 0.86x the peak of
# LoRA SFT at SmolLM2-135M's shape). On glibc's malloc they saved nothing (32k: 0.56x with
# them against 0.52x without; tiny base: up to 1.27x).
AUTO_CPU_ELEMENTWISE_ALLOCATORS = ("mimalloc",)


@dataclass
class KernelUsage:
    """What a patched model runs: the requested backend, call counts per op, the ops
    ``kernels: auto`` left out (with why), and the soft cap the fused head applies."""

    backend: str
    layers: int
    norms: int
    mlps: int
    calls: Counter = field(default_factory=Counter)
    paths: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    head_softcap: float | None = None

    @property
    def fuses_head(self) -> bool:
        """Whether training losses read log-probs from the fused head (else from the logits)."""
        return "fused_linear_logprobs" not in self.left_out

    def record(self, op: str, tensor: torch.Tensor) -> None:
        self.calls[op] += 1
        self.paths[op] = (
            "triton"
            if self.backend == "triton" or (self.backend == "auto" and tensor.is_cuda)
            else "torch"
        )

    def tag(self) -> str:
        """``op=path`` for every op that actually ran and ``op=off (why)`` for every op left
        out, e.g.
        ``rms_norm=torch,swiglu=torch,fused_linear_logprobs=off (adapter wraps lm_head)``."""
        parts = []
        for op in OPS:
            if self.calls[op] > 0:
                parts.append(f"{op}={self.paths[op]}")
            elif op in self.left_out:
                parts.append(f"{op}=off ({self.left_out[op]})")
        return ",".join(parts) or "none"

    def metrics(self) -> dict[str, float]:
        return {f"{KERNELS_PREFIX}{op}_calls": float(self.calls[op]) for op in OPS}

    def check_forward(self, before: Counter) -> None:
        """Raise unless one forward pass since ``before`` ran every patched norm and MLP once
        (a patch that missed layers would silently compare fused with half-fused runs)."""
        for op, expected in (("rms_norm", self.norms), ("swiglu", self.mlps)):
            ran = self.calls[op] - before[op]
            if ran != expected:
                raise RuntimeError(
                    f"kernel patch: one forward ran {op} {ran} times; the model has {expected}"
                )


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _check_triton_can_run(on_gpu: bool) -> None:
    """Refuse ``kernels: triton`` before the run starts where its kernels could not launch
    (otherwise the first forward would fail deep inside the model)."""
    from workbench.kernels.dispatch import interpreter_on, triton_installed

    if not triton_installed():
        raise SpecError(
            "kernels = 'triton': the triton package is not installed; pip install -e '.[triton]' "
            "(GPU machines), or use kernels: auto (Triton where it can run, torch paths elsewhere)"
        )
    if not on_gpu and not interpreter_on():
        raise SpecError(
            "kernels = 'triton': Triton kernels run on CUDA GPUs and this run trains on CPU; "
            "use kernels: auto (Triton on GPUs, the chunked torch paths elsewhere) "
            "or kernels: torch"
        )


def auto_left_out(base, on_gpu: bool, allocator: str = "system") -> dict[str, str]:
    """The ops ``kernels: auto`` leaves out of a model on this device, each with why.

    On CUDA every op runs (Triton kernels). On a CPU each op runs only where
    ``benchmarks/kernels_default.py`` measured it paying for itself (BENCHMARKS.md): the
    fused head from a vocabulary of :data:`AUTO_CPU_HEAD_MIN_VOCAB` up, the elementwise ops
    (RMSNorm, SwiGLU) only on the allocators of :data:`AUTO_CPU_ELEMENTWISE_ALLOCATORS`
    (``allocator``: the process's, as ``workbench.running.allocator.running()`` names it).
    """
    if on_gpu:
        return {}
    left_out = {}
    kind = allocator.split()[0] if allocator.strip() else "system"
    if kind not in AUTO_CPU_ELEMENTWISE_ALLOCATORS:
        for op in ("rms_norm", "swiglu"):
            left_out[op] = f"CPU on the {kind} allocator: no faster than the plain op"
    head = base.get_output_embeddings()
    vocab = head.weight.shape[0] if isinstance(head, torch.nn.Module) else 0
    if vocab < AUTO_CPU_HEAD_MIN_VOCAB:
        left_out["fused_linear_logprobs"] = f"CPU: vocabulary {vocab} < {AUTO_CPU_HEAD_MIN_VOCAB}"
    return left_out


def patch_model(
    model,
    mode: str,
    on_gpu: bool = False,
    adapter=None,
    leave_out: dict[str, str] | None = None,
    allocator: str = "system",
) -> KernelUsage | None:
    """Patch ``model`` in place for ``mode`` (``auto``, ``triton``, ``torch``); ``off``: None.

    ``on_gpu``: whether the run trains on CUDA devices (``kernels: triton`` needs them).
    ``allocator``: the process's allocator (``auto`` on a CPU fuses the elementwise ops on
    some only: :func:`auto_left_out`).
    ``adapter``: the run's adapter settings (a ``registry.AdapterParams``); one that wraps
    ``lm_head`` cannot run under the fused head. Norms and MLPs are matched per family
    (``workbench.models.families``), the head on its own (:func:`head_left_out`). ``auto``
    leaves out, op by op, what does not match and what does not pay on this device
    (:func:`auto_left_out`); ``torch`` and ``triton`` refuse a model any op cannot take.
    ``leave_out``: more ops not to patch, with why. Every op left out is named with its
    reason in the run's kernel tag.
    """
    if mode == "off":
        return None
    if mode == "triton":
        _check_triton_can_run(on_gpu)
    from workbench.kernels.rms_norm import rms_norm
    from workbench.kernels.swiglu import swiglu

    base = _base_model(model)
    family = families.family_of(base.config)
    norms, norm_why = families.find_norms(base, family)
    mlps, mlp_why = families.find_mlps(base, family)
    head_why = head_left_out(base, adapter)
    cannot = {op: why for op, why in zip(OPS, (norm_why, mlp_why, head_why)) if why is not None}
    if cannot and mode != "auto":
        raise SpecError(_refusal(mode, base, cannot))
    left_out = {**(leave_out or {}), **cannot}
    if mode == "auto":
        left_out = {**auto_left_out(base, on_gpu, allocator), **left_out}
    softcap = families.head_softcap(base.config, family)
    if family is None and "fused_linear_logprobs" not in left_out:
        # A model type the family table does not describe: its forward may do more to the
        # logits than its head does; the fused head runs only if it reproduces them.
        mismatch = families.head_mismatch(base, softcap)
        if mismatch is not None:
            left_out["fused_linear_logprobs"] = mismatch
    if "rms_norm" in left_out:
        norms = []
    if "swiglu" in left_out:
        mlps = []
    layers = getattr(base.config, "num_hidden_layers", len(mlps))
    usage = KernelUsage(
        mode, layers, len(norms), len(mlps), left_out=left_out, head_softcap=softcap
    )
    if family is not None:
        for m in norms:
            m.forward = types.MethodType(_norm_forward(family.norm, usage, rms_norm), m)
        for m, activation in mlps:
            m.forward = types.MethodType(_mlp_forward(family.mlp, activation, usage, swiglu), m)
    return usage


def head_left_out(base, adapter=None) -> str | None:
    """Why the fused head cannot replace ``base``'s head, or None (structure only: a model
    type outside the family table is also checked against its forward, by
    ``families.head_mismatch``)."""
    head = base.get_output_embeddings()
    if adapter is not None and not adapter.works_with_fused_head():
        return "adapter wraps lm_head"
    if head is None:
        return f"{type(base).__name__} has no output embedding"
    if type(head) is not torch.nn.Linear:
        kind = type(head)
        name = kind.__name__
        if not kind.__module__.startswith("torch."):
            name = f"{kind.__module__}.{name}"  # an adapter's wrapper is often a Linear too
        return f"lm_head is a {name}"
    if not isinstance(getattr(base, "model", None), torch.nn.Module):
        return f"{type(base).__name__} has no .model decoder"
    return None


def _refusal(mode: str, base, cannot: dict[str, str]) -> str:
    """The error of ``kernels: torch/triton`` on a model some op cannot take."""
    whys = "; ".join(f"{op}: {why}" for op, why in cannot.items())
    hint = ""
    if "fused_linear_logprobs" in cannot and "lm_head" in cannot["fused_linear_logprobs"]:
        hint = " (an adapter on the head? remove lm_head from adapter.target_modules)"
    return (
        f"kernels: {mode!r} patches every op, and this {type(base).__name__} cannot take "
        f"them all ({whys}){hint}. Set kernels: auto (runs the ops that fit, names the "
        "others in the run's kernel tag) or off"
    )


def _norm_forward(style: families.NormStyle, usage: KernelUsage, rms_norm):
    def forward(self, hidden_states):
        usage.record("rms_norm", hidden_states)
        eps = getattr(self, style.eps_attr)
        return rms_norm(
            hidden_states, self.weight, eps, backend=usage.backend,
            offset=style.offset, casting=style.casting,
        )  # fmt: skip

    return forward


def _mlp_forward(style: families.MlpStyle, activation: str, usage: KernelUsage, swiglu):
    def forward(self, x):
        usage.record("swiglu", x)
        gate, up = style.gate_and_up(self, x)
        return self.down_proj(swiglu(gate, up, backend=usage.backend, activation=activation))

    return forward


def head_logprobs(
    model,
    usage: KernelUsage,
    input_ids,
    attention_mask,
    targets: list[torch.Tensor],
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per-token log-probs of each ``targets`` (B, T-1) tensor after position t < T-1, under
    softmax(logits / ``temperature``), the logits being the model's own: its head's, soft-capped
    where the model caps them (``usage.head_softcap``) before the temperature.

    Runs the decoder once without its head, then the fused head once per target tensor;
    ignored targets (-100) give 0. Without a soft cap the head is linear, and the op divides
    its input rows (and bias) by the temperature rather than the logits.

    ``position_ids``: positions restarting at each row of packed sequences (with no
    ``attention_mask``; see ``workbench.data.packing``). No KV cache is kept: a scoring pass
    never decodes on, and with one transformers would not read rows off the position ids.
    """
    from workbench.kernels.fused_linear_token_logprobs import fused_linear_token_logprobs

    base = _base_model(model)
    hidden = base.model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        use_cache=False,
    ).last_hidden_state  # fmt: skip
    hidden = hidden[:, :-1, :]
    head = base.get_output_embeddings()
    rows = hidden.reshape(-1, hidden.shape[-1])
    out = []
    for target in targets:
        usage.record("fused_linear_logprobs", rows)
        logp = fused_linear_token_logprobs(
            rows, head.weight, target.reshape(-1), bias=head.bias, backend=usage.backend,
            softcap=usage.head_softcap, temperature=temperature,
        )  # fmt: skip
        out.append(logp.reshape(target.shape).float())
    return out
