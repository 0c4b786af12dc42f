"""Swap a transformers Llama-family model's hot paths for the fused kernels, per model.

Part of the models layer (it needs transformers' module structure, so it cannot live in
``workbench.kernels``). Only the given model instance is patched (bound ``forward``
methods), never module-level functions, so patched and unpatched models can share a
process. Every patched op counts its calls as it runs; the run records which ops actually
ran, through which path, and how often.

- RMSNorm modules (``weight`` + ``variance_epsilon``) -> ``kernels.rms_norm``
- MLPs ``down_proj(act(gate_proj(x)) * up_proj(x))`` with SiLU -> ``kernels.swiglu``
- the loss head: training losses read per-token log-probs from
  ``kernels.fused_linear_token_logprobs`` on the last hidden states, so the
  batch x sequence x vocabulary logits are never built (see :func:`head_logprobs`).
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import torch

from workbench.spec.errors import SpecError
from workbench.spec.mlflow_names import KERNELS_PREFIX

OPS = ("rms_norm", "swiglu", "fused_linear_logprobs")
# Where ``kernels: auto`` runs each op on a CPU, from benchmarks/kernels_default.py
# (BENCHMARKS.md, "Kernels by default", 2 cores, float32): the fused head from this
# vocabulary size up (LoRA SFT, a 32k vocabulary: 0.52-0.53x the step time, 0.35-0.36x the
# peak memory; 2k: 0.93-1.03x, 0.84-0.88x; the tiny base's 382: no gain beyond the noise) ...
AUTO_CPU_HEAD_MIN_VOCAB = 2048
# ... and the chunked RMSNorm / SwiGLU paths only if this is set: on a CPU they saved
# nothing (32k: 0.56x with them against 0.52x without; tiny base: up to 1.27x).
AUTO_CPU_ELEMENTWISE = False


@dataclass
class KernelUsage:
    """What a patched model runs: the requested backend, call counts per op, and the ops
    ``kernels: auto`` left out (with why)."""

    backend: str
    layers: int
    norms: int
    mlps: int
    calls: Counter = field(default_factory=Counter)
    paths: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

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


def _is_rms_norm(module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")


def _is_swiglu_mlp(module) -> bool:
    act = getattr(module, "act_fn", None)
    # transformers uses its own SiLUActivation class (not torch.nn.SiLU) in recent versions.
    is_silu = isinstance(act, torch.nn.SiLU) or type(act).__name__ in ("SiLUActivation", "SiLU")
    return all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj")) and is_silu


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


def auto_left_out(base, on_gpu: bool) -> dict[str, str]:
    """The ops ``kernels: auto`` leaves out of a (Llama-family) model, each with why.

    On CUDA every op runs (Triton kernels). On a CPU each op runs only where
    ``benchmarks/kernels_default.py`` measured it paying for itself (BENCHMARKS.md): the
    fused head from a vocabulary of :data:`AUTO_CPU_HEAD_MIN_VOCAB` up, the elementwise ops
    (RMSNorm, SwiGLU) only if :data:`AUTO_CPU_ELEMENTWISE`.
    """
    if on_gpu:
        return {}
    left_out = {}
    if not AUTO_CPU_ELEMENTWISE:
        for op in ("rms_norm", "swiglu"):
            left_out[op] = "CPU: no faster than the plain op"
    vocab = base.get_output_embeddings().weight.shape[0]
    if vocab < AUTO_CPU_HEAD_MIN_VOCAB:
        left_out["fused_linear_logprobs"] = f"CPU: vocabulary {vocab} < {AUTO_CPU_HEAD_MIN_VOCAB}"
    return left_out


def patch_model(
    model, mode: str, on_gpu: bool = False, adapter=None, leave_out: dict[str, str] | None = None
) -> KernelUsage | None:
    """Patch ``model`` in place for ``mode`` (``auto``, ``triton``, ``torch``); ``off``: None.

    ``on_gpu``: whether the run trains on CUDA devices (``kernels: triton`` needs them).
    ``adapter``: the run's adapter settings (a ``registry.AdapterParams``); one that wraps
    ``lm_head`` cannot run under the fused head: ``auto`` leaves that op out, ``torch`` and
    ``triton`` refuse the run. ``auto`` also leaves out the ops that do not pay on this
    device (:func:`auto_left_out`). ``leave_out``: more ops not to patch, with why.
    Every op left out is named with its reason in the run's kernel tag.
    """
    if mode == "off":
        return None
    if mode == "triton":
        _check_triton_can_run(on_gpu)
    from workbench.kernels.rms_norm import rms_norm
    from workbench.kernels.swiglu import swiglu

    base = _base_model(model)
    norms = [m for m in base.modules() if _is_rms_norm(m)]
    mlps = [m for m in base.modules() if _is_swiglu_mlp(m)]
    layers = getattr(base.config, "num_hidden_layers", len(mlps))
    if not norms or len(mlps) != layers or not hasattr(base, "model"):
        if mode == "auto":
            why = f"{type(base).__name__} is not a Llama-family model"
            return KernelUsage(mode, layers, 0, 0, left_out={op: why for op in OPS})
        raise SpecError(
            f"kernels: {mode!r} supports Llama-family models (RMSNorm + SiLU-gated MLP); this "
            f"{type(base).__name__} has {len(norms)} RMSNorm and {len(mlps)}/{layers} such MLPs. "
            "Set kernels: auto (leaves the ops out) or off"
        )
    left_out = dict(leave_out or {})
    head = base.get_output_embeddings()
    wraps_head = adapter is not None and not adapter.works_with_fused_head()
    if wraps_head or type(head) is not torch.nn.Linear:
        if mode != "auto":
            raise SpecError(
                f"kernels: {mode!r} fuses the loss head, but lm_head is a {type(head).__name__} "
                "(an adapter on the head?); remove lm_head from adapter.target_modules, or set "
                "kernels: auto (runs the other fused ops) or off"
            )
        left_out["fused_linear_logprobs"] = (
            "adapter wraps lm_head" if wraps_head else f"lm_head is a {type(head).__name__}"
        )
    if mode == "auto":
        left_out = {**auto_left_out(base, on_gpu), **left_out}
    if "rms_norm" in left_out:
        norms = []
    if "swiglu" in left_out:
        mlps = []
    usage = KernelUsage(mode, layers, len(norms), len(mlps), left_out=left_out)

    def norm_forward(self, hidden_states):
        usage.record("rms_norm", hidden_states)
        return rms_norm(hidden_states, self.weight, self.variance_epsilon, backend=mode)

    def mlp_forward(self, x):
        usage.record("swiglu", x)
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x), backend=mode))

    for m in norms:
        m.forward = types.MethodType(norm_forward, m)
    for m in mlps:
        m.forward = types.MethodType(mlp_forward, m)
    return usage


def head_logprobs(
    model,
    usage: KernelUsage,
    input_ids,
    attention_mask,
    targets: list[torch.Tensor],
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """Per-token log-probs of each ``targets`` (B, T-1) tensor after position t < T-1, under
    softmax(logits / ``temperature``).

    Runs the decoder once without its head, then the fused head once per target tensor;
    ignored targets (-100) give 0. The head is linear, so dividing its input rows (and bias)
    by the temperature divides the logits by it without ever forming them.
    """
    from workbench.kernels.fused_linear_token_logprobs import fused_linear_token_logprobs

    base = _base_model(model)
    hidden = base.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = hidden[:, :-1, :]
    head = base.get_output_embeddings()
    rows = hidden.reshape(-1, hidden.shape[-1])
    bias = head.bias
    if temperature != 1.0:
        rows = rows / temperature
        bias = None if bias is None else bias / temperature
    out = []
    for target in targets:
        usage.record("fused_linear_logprobs", rows)
        logp = fused_linear_token_logprobs(
            rows, head.weight, target.reshape(-1), bias=bias, backend=usage.backend
        )
        out.append(logp.reshape(target.shape).float())
    return out
