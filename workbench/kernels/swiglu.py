"""Gated MLP activations, the way Llama and Gemma compute them: ``act(gate).to(gate.dtype) * up``.

Llama's MLP is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with ``act_fn = silu``
(SwiGLU; Mistral, Qwen2/3 and Phi3's chunked ``gate_up_proj`` too); Gemma's uses
``gelu_pytorch_tanh`` (GeGLU): this op is the middle part, for ``activation="silu"`` or
``"gelu_tanh"``. ``silu(g) = g * sigmoid(g)`` and
``gelu_tanh(g) = 0.5 * g * (1 + tanh(k * (g + c * g^3)))`` with ``k = sqrt(2 / pi)``,
``c = 0.044715``, which equals ``g * sigmoid(2 * k * (g + c * g^3))``. The activation is
computed in float32 and rounded to the dtype of ``gate`` before the product, as torch does
when it runs ``act(g) * u`` in bf16/fp16, so the forward agrees with the unfused model.

Backward, with ``s = sigmoid(g)``: ``dup = dy * act(g)`` and ``dgate = dy * up * act'(g)``,
``silu'(g) = s * (1 + g * (1 - s))``; with ``s = sigmoid(2 * k * (g + c * g^3))``,
``gelu_tanh'(g) = s + g * s * (1 - s) * 2 * k * (1 + 3 * c * g^2)``. Only ``gate`` and ``up``
are saved; the activation is recomputed from them in the backward (autograd through
``act(g) * u`` would also keep ``act(g)``, one more activation-sized tensor per layer).

Three paths (docs/concepts.md, "Fused kernels"): ``"triton"`` (elementwise kernels over the
flattened tensors, float32 inside; CUDA, or CPU under ``TRITON_INTERPRET=1`` in tests),
``"torch"`` (torch's own fused elementwise ops in the input dtypes, so it agrees with the
unfused model bit for bit, forward and backward; an elementwise op needs no chunks to stay
lean) and ``"auto"`` (triton on CUDA tensors when triton is installed, torch elsewhere).
Triton is imported only when a triton path runs, so this module imports without it.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from workbench.kernels.dispatch import use_triton

_TRITON_BLOCK = 1024
# The gate activations: SwiGLU's silu and GeGLU's tanh-approximated gelu
# (transformers' ``gelu_pytorch_tanh``).
ACTIVATIONS = ("silu", "gelu_tanh")


def swiglu(
    gate: torch.Tensor, up: torch.Tensor, backend: str = "auto", activation: str = "silu"
) -> torch.Tensor:
    """``act(gate) * up``, elementwise, with a backward that recomputes the activation.

    Args:
        gate: the gate projection's output, any shape, float32, bfloat16 or float16.
        up: the up projection's output, the same shape as ``gate``.
        backend: ``"auto"`` (triton on CUDA tensors, torch elsewhere), ``"triton"`` or
            ``"torch"``.
        activation: ``"silu"`` (SwiGLU: Llama, Mistral, Qwen, Phi3) or ``"gelu_tanh"``
            (GeGLU: Gemma's ``gelu_pytorch_tanh``).

    Returns:
        ``act(gate).to(gate.dtype) * up`` in the promoted dtype of ``gate`` and ``up``.
        Differentiable in both inputs.
    """
    if gate.shape != up.shape:
        raise ValueError(
            f"swiglu expects gate and up of the same shape; got {tuple(gate.shape)} and "
            f"{tuple(up.shape)}"
        )
    if gate.device != up.device:
        raise ValueError(f"gate is on {gate.device} but up is on {up.device}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")
    use_triton_path = use_triton(backend, gate)
    # (torch declares Function.apply without types.)
    out: torch.Tensor = _SwiGLUFunction.apply(  # type: ignore[no-untyped-call]
        gate, up, use_triton_path, activation == "gelu_tanh"
    )
    return out


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, gate: torch.Tensor, up: torch.Tensor, use_triton: bool, gelu_tanh: bool
    ) -> torch.Tensor:
        flat_gate, flat_up = gate.reshape(-1), up.reshape(-1)
        if use_triton:
            flat_gate, flat_up = flat_gate.contiguous(), flat_up.contiguous()
            out = _triton_forward(flat_gate, flat_up, gelu_tanh)
        else:
            out = _torch_forward(flat_gate, flat_up, gelu_tanh)
        ctx.save_for_backward(flat_gate, flat_up)
        ctx.use_triton = use_triton
        ctx.gelu_tanh = gelu_tanh
        ctx.shape = gate.shape
        return out.view(gate.shape)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        flat_gate, flat_up = ctx.saved_tensors
        need_gate, need_up = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_gate or need_up):
            return None, None, None, None
        flat_grad = grad_out.reshape(-1)
        dgate: torch.Tensor | None
        dup: torch.Tensor | None
        if ctx.use_triton:
            dgate, dup = _triton_backward(flat_grad.contiguous(), flat_gate, flat_up, ctx.gelu_tanh)
        else:
            dgate, dup = _torch_backward(
                flat_grad, flat_gate, flat_up, need_gate, need_up, ctx.gelu_tanh
            )
        dgate = dgate.view(ctx.shape) if need_gate and dgate is not None else None
        dup = dup.view(ctx.shape) if need_up and dup is not None else None
        return dgate, dup, None, None


# ---------------------------------------------------------------------------------------
# torch path


def _torch_activation(gate: torch.Tensor, gelu_tanh: bool) -> torch.Tensor:
    # What transformers' SiLUActivation and GELUTanh modules call.
    return F.gelu(gate, approximate="tanh") if gelu_tanh else F.silu(gate)


def _torch_forward(gate: torch.Tensor, up: torch.Tensor, gelu_tanh: bool) -> torch.Tensor:
    out_dtype = torch.promote_types(gate.dtype, up.dtype)
    act = _torch_activation(gate, gelu_tanh)
    if act.dtype == out_dtype:
        # In place: one output-sized allocation instead of two.
        return act.mul_(up)
    return act * up


def _torch_backward(
    grad: torch.Tensor,
    gate: torch.Tensor,
    up: torch.Tensor,
    need_gate: bool,
    need_up: bool,
    gelu_tanh: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # The activation recomputed: one elementwise pass. The products are rounded to the input
    # dtypes and the activation's derivative is aten's fused silu_backward / gelu_backward,
    # exactly the ops autograd runs for act(gate) * up, so the gradients agree with the
    # unfused model bit for bit, and no float32 temporaries are made (which is why this path
    # needs no chunks).
    act = _torch_activation(gate, gelu_tanh)
    dup = (grad * act).to(up.dtype) if need_up else None
    del act
    dgate: torch.Tensor | None = None
    if need_gate:
        grad_act = (grad * up).to(gate.dtype)
        if gelu_tanh:
            dgate = torch.ops.aten.gelu_backward(grad_act, gate, approximate="tanh")
        else:
            dgate = torch.ops.aten.silu_backward(grad_act, gate)
    return dgate, dup


# ---------------------------------------------------------------------------------------
# triton path


@functools.cache
def _triton_kernels() -> SimpleNamespace:
    """Compile-on-demand kernels; defined here so that importing this module needs no triton."""
    import triton
    import triton.language as tl

    # Triton reads a kernel's parameter annotations as compile-time types, so its parameters
    # stay unannotated; and triton ships no types, so its decorator is untyped to mypy.
    @triton.jit  # type: ignore[untyped-decorator]
    def swiglu_forward_kernel(  # type: ignore[no-untyped-def]
        GATE, UP, OUT, numel, GELU_TANH: tl.constexpr, BLOCK: tl.constexpr
    ):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        g = tl.load(GATE + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(UP + offsets, mask=mask, other=0.0).to(tl.float32)
        if GELU_TANH:
            # 0.5 * (1 + tanh(z)) = sigmoid(2 * z), no tanh needed; 2 * sqrt(2 / pi) and the
            # cubic's 0.044715 written out (a kernel reads no module constants).
            sig = tl.sigmoid(1.5957691216057308 * (g + 0.044715 * g * g * g))
        else:
            sig = tl.sigmoid(g)
        # The activation rounded to the gate's dtype before the product, as act(g) * u does.
        act = (g * sig).to(GATE.dtype.element_ty).to(tl.float32)
        tl.store(OUT + offsets, (act * u).to(OUT.dtype.element_ty), mask=mask)

    @triton.jit  # type: ignore[untyped-decorator]
    def swiglu_backward_kernel(  # type: ignore[no-untyped-def]
        DY, GATE, UP, DGATE, DUP, numel, GELU_TANH: tl.constexpr, BLOCK: tl.constexpr
    ):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        dy = tl.load(DY + offsets, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(UP + offsets, mask=mask, other=0.0).to(tl.float32)
        if GELU_TANH:
            g2 = g * g
            sig = tl.sigmoid(1.5957691216057308 * (g + 0.044715 * g * g2))
            slope = sig * (1.0 - sig)
            # Where the sigmoid saturates its slope is 0; g^2 may have overflowed there.
            d_act = sig + tl.where(
                slope == 0.0, 0.0, g * slope * 1.5957691216057308 * (1.0 + 0.134145 * g2)
            )
        else:
            sig = tl.sigmoid(g)
            d_act = sig * (1.0 + g * (1.0 - sig))
        act = (g * sig).to(GATE.dtype.element_ty).to(tl.float32)
        dup = dy * act
        dgate = dy * u * d_act
        tl.store(DGATE + offsets, dgate.to(DGATE.dtype.element_ty), mask=mask)
        tl.store(DUP + offsets, dup.to(DUP.dtype.element_ty), mask=mask)

    return SimpleNamespace(
        cdiv=triton.cdiv, forward=swiglu_forward_kernel, backward=swiglu_backward_kernel
    )


def _triton_forward(gate: torch.Tensor, up: torch.Tensor, gelu_tanh: bool) -> torch.Tensor:
    kernels = _triton_kernels()
    out = torch.empty(
        gate.numel(), dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device
    )
    if gate.numel() == 0:
        return out
    grid = (kernels.cdiv(gate.numel(), _TRITON_BLOCK),)
    kernels.forward[grid](gate, up, out, gate.numel(), GELU_TANH=gelu_tanh, BLOCK=_TRITON_BLOCK)
    return out


def _triton_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, gelu_tanh: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = _triton_kernels()
    dgate = torch.empty_like(gate)
    dup = torch.empty_like(up)
    if gate.numel() == 0:
        return dgate, dup
    grid = (kernels.cdiv(gate.numel(), _TRITON_BLOCK),)
    kernels.backward[grid](
        grad, gate, up, dgate, dup, gate.numel(), GELU_TANH=gelu_tanh, BLOCK=_TRITON_BLOCK
    )
    return dgate, dup
