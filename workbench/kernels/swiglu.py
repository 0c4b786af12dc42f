"""SwiGLU gating, the way Llama's MLP computes it: ``silu(gate).to(gate.dtype) * up``.

Llama's MLP is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with ``act_fn = silu``; this
op is the middle part. ``silu(g) = g * sigmoid(g)`` is computed in float32 and rounded to
the dtype of ``gate`` before the product, as torch does when it runs ``F.silu(g) * u`` in
bf16/fp16, so the forward agrees with the unfused model.

Backward, with ``s = sigmoid(g)``: ``dup = dy * silu(g)`` and
``dgate = dy * up * s * (1 + g * (1 - s))``. Only ``gate`` and ``up`` are saved; silu is
recomputed from them in the backward (autograd through ``F.silu(g) * u`` would also keep
``silu(g)``, one more activation-sized tensor per layer).

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


def swiglu(gate: torch.Tensor, up: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """``silu(gate) * up``, elementwise, with a backward that recomputes silu.

    Args:
        gate: the gate projection's output, any shape, float32, bfloat16 or float16.
        up: the up projection's output, the same shape as ``gate``.
        backend: ``"auto"`` (triton on CUDA tensors, torch elsewhere), ``"triton"`` or
            ``"torch"``.

    Returns:
        ``silu(gate).to(gate.dtype) * up`` in the promoted dtype of ``gate`` and ``up``.
        Differentiable in both inputs.
    """
    if gate.shape != up.shape:
        raise ValueError(
            f"swiglu expects gate and up of the same shape; got {tuple(gate.shape)} and "
            f"{tuple(up.shape)}"
        )
    if gate.device != up.device:
        raise ValueError(f"gate is on {gate.device} but up is on {up.device}")
    use_triton_path = use_triton(backend, gate)
    # (torch declares Function.apply without types.)
    out: torch.Tensor = _SwiGLUFunction.apply(gate, up, use_triton_path)  # type: ignore[no-untyped-call]
    return out


class _SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, use_triton: bool) -> torch.Tensor:
        flat_gate, flat_up = gate.reshape(-1), up.reshape(-1)
        if use_triton:
            flat_gate, flat_up = flat_gate.contiguous(), flat_up.contiguous()
            out = _triton_forward(flat_gate, flat_up)
        else:
            out = _torch_forward(flat_gate, flat_up)
        ctx.save_for_backward(flat_gate, flat_up)
        ctx.use_triton = use_triton
        ctx.shape = gate.shape
        return out.view(gate.shape)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        flat_gate, flat_up = ctx.saved_tensors
        need_gate, need_up = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_gate or need_up):
            return None, None, None
        flat_grad = grad_out.reshape(-1)
        dgate: torch.Tensor | None
        dup: torch.Tensor | None
        if ctx.use_triton:
            dgate, dup = _triton_backward(flat_grad.contiguous(), flat_gate, flat_up)
        else:
            dgate, dup = _torch_backward(flat_grad, flat_gate, flat_up, need_gate, need_up)
        dgate = dgate.view(ctx.shape) if need_gate and dgate is not None else None
        dup = dup.view(ctx.shape) if need_up and dup is not None else None
        return dgate, dup, None


# ---------------------------------------------------------------------------------------
# torch path


def _torch_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    out_dtype = torch.promote_types(gate.dtype, up.dtype)
    act = F.silu(gate)
    if act.dtype == out_dtype:
        # In place: one output-sized allocation instead of two.
        return act.mul_(up)
    return act * up


def _torch_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, need_gate: bool, need_up: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # silu recomputed: one elementwise pass. The products are rounded to the input dtypes
    # and silu's derivative is aten's fused silu_backward, exactly the ops autograd runs for
    # F.silu(gate) * up, so the gradients agree with the unfused model bit for bit, and no
    # float32 temporaries are made (which is why this path needs no chunks).
    act = F.silu(gate)
    dup = (grad * act).to(up.dtype) if need_up else None
    del act
    dgate: torch.Tensor | None = None
    if need_gate:
        grad_act = (grad * up).to(gate.dtype)
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
    def swiglu_forward_kernel(GATE, UP, OUT, numel, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        g = tl.load(GATE + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(UP + offsets, mask=mask, other=0.0).to(tl.float32)
        # silu rounded to the gate's dtype before the product, as F.silu(g) * u does.
        act = (g * tl.sigmoid(g)).to(GATE.dtype.element_ty).to(tl.float32)
        tl.store(OUT + offsets, (act * u).to(OUT.dtype.element_ty), mask=mask)

    @triton.jit  # type: ignore[untyped-decorator]
    def swiglu_backward_kernel(DY, GATE, UP, DGATE, DUP, numel, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        dy = tl.load(DY + offsets, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GATE + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(UP + offsets, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(g)
        act = (g * sig).to(GATE.dtype.element_ty).to(tl.float32)
        dup = dy * act
        dgate = dy * u * sig * (1.0 + g * (1.0 - sig))
        tl.store(DGATE + offsets, dgate.to(DGATE.dtype.element_ty), mask=mask)
        tl.store(DUP + offsets, dup.to(DUP.dtype.element_ty), mask=mask)

    return SimpleNamespace(
        cdiv=triton.cdiv, forward=swiglu_forward_kernel, backward=swiglu_backward_kernel
    )


def _triton_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    kernels = _triton_kernels()
    out = torch.empty(
        gate.numel(), dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device
    )
    if gate.numel() == 0:
        return out
    grid = (kernels.cdiv(gate.numel(), _TRITON_BLOCK),)
    kernels.forward[grid](gate, up, out, gate.numel(), BLOCK=_TRITON_BLOCK)
    return out


def _triton_backward(
    grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = _triton_kernels()
    dgate = torch.empty_like(gate)
    dup = torch.empty_like(up)
    if gate.numel() == 0:
        return dgate, dup
    grid = (kernels.cdiv(gate.numel(), _TRITON_BLOCK),)
    kernels.backward[grid](grad, gate, up, dgate, dup, gate.numel(), BLOCK=_TRITON_BLOCK)
    return dgate, dup
