"""RMSNorm, the way Llama and Gemma compute it.

``casting="llama"`` (Llama, Mistral, Qwen2/3, Phi3) matches ``LlamaRMSNorm.forward``:
``(offset + weight) * (x / sqrt(mean(x^2, -1) + eps)).to(x.dtype)``; the statistics and the
normalisation are computed in float32, the normalised value is cast back to the input dtype,
and only then multiplied by the weight (so the output dtype is the promotion of the input
and weight dtypes, as in the module). ``casting="gemma"`` (Gemma 1, 2, 3) matches
``GemmaRMSNorm.forward`` with ``offset=1``: ``(n * (offset + weight.float())).to(x.dtype)``,
the scaling done in float32 too and the result cast to the input dtype (Gemma's weights are
stored around 0 and scale by ``1 + weight``).

Three paths (docs/concepts.md, "Fused kernels"):

- ``"triton"``: a forward kernel (one program per row) that also stores the per-row
  ``rstd = 1 / sqrt(mean(x^2) + eps)``, and a backward kernel in which each program walks a
  block of rows and keeps a partial sum of the weight gradient; the partial sums are added
  up with torch. Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``
  (tests only).
- ``"torch"``: row chunks, so the float32 temporaries stay bounded whatever the input
  size; the backward is written by hand and needs only ``x`` and ``rstd`` (plus the weight),
  where autograd through the module would keep several full-size float32 tensors.
- ``"auto"``: triton on CUDA tensors when triton is installed, torch elsewhere.

Backward, with ``n = x * rstd`` (float32), ``dn = dy * (offset + weight)``, ``H`` the hidden
size: ``dx = rstd * (dn - n * mean(dn * n, -1))`` and ``dweight = sum_rows(dy * n')``, where
``n' = n.to(x.dtype)`` under the llama casting (the weight sees the rounded value) and
``n' = n`` under the gemma casting. Gradients are accumulated in float32 and returned in the
dtypes of ``x`` and ``weight``.

Triton is imported only when a triton path runs, so this module imports without it.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import torch

from workbench.kernels.dispatch import use_triton

# Elements per chunk of the torch path: bounds each float32 temporary to about 1 MiB.
TORCH_CHUNK_ELEMENTS = 1 << 18
# The triton kernels hold one row in a single block.
_TRITON_MAX_HIDDEN = 1 << 16
# Where the normalised value is rounded to the input dtype (module docstring).
CASTINGS = ("llama", "gemma")


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    backend: str = "auto",
    offset: float = 0.0,
    casting: str = "llama",
) -> torch.Tensor:
    """RMS-normalise ``x`` over its last dimension and scale by ``offset + weight``.

    Args:
        x: ``(..., H)`` tensor, float32, bfloat16 or float16; leading dimensions are
            flattened into rows.
        weight: ``(H,)`` scale.
        eps: added to the mean square before the reciprocal square root.
        backend: ``"auto"`` (triton on CUDA tensors, torch elsewhere), ``"triton"`` or
            ``"torch"``.
        offset: added to the weight (Gemma's norms scale by ``1 + weight``).
        casting: ``"llama"`` (round the normalised value to ``x.dtype``, then scale) or
            ``"gemma"`` (scale in float32, then round to ``x.dtype``).

    Returns:
        With ``n = x.float() * rsqrt(mean(x.float()^2, -1) + eps)``, shaped like ``x``:
        ``"llama"``: ``(offset + weight) * n.to(x.dtype)``, in the promoted dtype of ``x``
        and ``weight``; ``"gemma"``: ``(n * (offset + weight.float())).to(x.dtype)``.
        Differentiable in ``x`` and ``weight``.
    """
    if x.dim() < 1 or weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(
            f"rms_norm expects x of shape (..., H) and weight of shape (H,); "
            f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight is on {weight.device}")
    if casting not in CASTINGS:
        raise ValueError(f"casting={casting!r} is not one of {CASTINGS}")
    use_triton = _use_triton(backend, x, hidden=x.shape[-1])
    # (torch declares Function.apply without types.)
    out: torch.Tensor = _RMSNormFunction.apply(  # type: ignore[no-untyped-call]
        x, weight, float(eps), use_triton, float(offset), casting == "gemma"
    )
    return out


def _use_triton(backend: str, x: torch.Tensor, hidden: int) -> bool:
    fits = hidden <= _TRITON_MAX_HIDDEN
    if backend == "triton" and not fits:
        raise ValueError(
            f"the triton rms_norm holds a row in one block: hidden size {hidden} is over "
            f"{_TRITON_MAX_HIDDEN}; use backend='torch'"
        )
    return use_triton(backend, x, fits)


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        use_triton: bool,
        offset: float,
        gemma: bool,
    ) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        if use_triton:
            rows = _contiguous_rows(rows)
            y, rstd = _triton_forward(rows, weight, eps, offset, gemma)
        else:
            y, rstd = _torch_forward(rows, weight, eps, offset, gemma)
        ctx.save_for_backward(rows, weight, rstd)
        ctx.use_triton = use_triton
        ctx.shape = shape
        ctx.offset, ctx.gemma = offset, gemma
        return y.view(shape)

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None]:
        rows, weight, rstd = ctx.saved_tensors
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_dx or need_dw):
            return None, None, None, None, None, None
        grad_rows = grad_out.reshape(-1, rows.shape[-1])
        dx: torch.Tensor | None
        dw: torch.Tensor | None
        if ctx.use_triton:
            dx, dw = _triton_backward(
                _contiguous_rows(grad_rows), rows, weight, rstd, ctx.offset, ctx.gemma
            )
        else:
            dx, dw = _torch_backward(
                grad_rows, rows, weight, rstd, need_dx, need_dw, ctx.offset, ctx.gemma
            )
        dx = dx.view(ctx.shape) if need_dx and dx is not None else None
        return dx, (dw if need_dw else None), None, None, None, None


def _contiguous_rows(rows: torch.Tensor) -> torch.Tensor:
    # The kernels index a row as base + row * row_stride + col: the columns must be dense.
    return rows if rows.stride(-1) == 1 else rows.contiguous()


# ---------------------------------------------------------------------------------------
# torch path


def _rows_per_chunk(hidden: int) -> int:
    return max(1, TORCH_CHUNK_ELEMENTS // max(hidden, 1))


def _out_dtype(x_dtype: torch.dtype, w_dtype: torch.dtype, gemma: bool) -> torch.dtype:
    return x_dtype if gemma else torch.promote_types(x_dtype, w_dtype)


def _torch_forward(
    rows: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, gemma: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    n_rows, hidden = rows.shape
    y = torch.empty(
        (n_rows, hidden), dtype=_out_dtype(rows.dtype, weight.dtype, gemma), device=rows.device
    )
    rstd = torch.empty((n_rows, 1), dtype=torch.float32, device=rows.device)
    # Gemma: ``output * (1.0 + self.weight.float())`` (an addition commutes exactly).
    scale = weight.float() + offset if gemma else (weight + offset if offset else weight)
    step = _rows_per_chunk(hidden)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        # The same sequence of ops as LlamaRMSNorm.forward (GemmaRMSNorm.forward), so the
        # results agree bit for bit.
        xf = rows[start:stop].to(torch.float32)
        variance = xf.pow(2).mean(-1, keepdim=True)
        torch.rsqrt(variance + eps, out=rstd[start:stop])
        if gemma:
            y[start:stop] = (xf * rstd[start:stop]) * scale
        else:
            normed = (xf * rstd[start:stop]).to(rows.dtype)
            torch.mul(scale, normed, out=y[start:stop])
    return y, rstd


def _torch_backward(
    grad_rows: torch.Tensor,
    rows: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    need_dx: bool,
    need_dw: bool,
    offset: float,
    gemma: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    n_rows, hidden = rows.shape
    dx = torch.empty_like(rows, memory_format=torch.contiguous_format) if need_dx else None
    dw = torch.zeros(hidden, dtype=torch.float32, device=rows.device) if need_dw else None
    w = weight.to(torch.float32) + offset
    step = _rows_per_chunk(hidden)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        normed = rows[start:stop].to(torch.float32) * rstd[start:stop]
        dy = grad_rows[start:stop].to(torch.float32)
        if dw is not None and gemma:  # need_dw; the weight scales the float32 value
            dw += (dy * normed).sum(0)
        elif dw is not None:  # need_dw
            # y = weight * normed.to(x.dtype): the weight sees the rounded normalised value.
            dw += (dy * normed.to(rows.dtype).to(torch.float32)).sum(0)
        if dx is not None:  # need_dx
            dn = dy * w  # not in place: dy may be the caller's gradient itself (float32)
            proj = (dn * normed).mean(-1, keepdim=True)
            dn.sub_(normed.mul_(proj)).mul_(rstd[start:stop])
            dx[start:stop] = dn
    return dx, (None if dw is None else dw.to(weight.dtype))


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
    def rms_norm_forward_kernel(  # type: ignore[no-untyped-def]
        X,
        W,
        Y,
        RSTD,
        x_row_stride,
        y_row_stride,
        n_cols,
        EPS: tl.constexpr,
        OFFSET: tl.constexpr,
        GEMMA: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(X + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
        variance = tl.sum(x * x, axis=0) / n_cols
        rstd = tl.rsqrt(variance + EPS)
        tl.store(RSTD + row, rstd)
        normed = x * rstd
        if not GEMMA:
            # Round the normalised value to the input dtype before scaling, as LlamaRMSNorm
            # does (GemmaRMSNorm scales in float32 and rounds the result only).
            normed = normed.to(X.dtype.element_ty).to(tl.float32)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + OFFSET
        y = normed * w
        tl.store(Y + row * y_row_stride + cols, y.to(Y.dtype.element_ty), mask=mask)

    @triton.jit  # type: ignore[untyped-decorator]
    def rms_norm_backward_kernel(  # type: ignore[no-untyped-def]
        DY,
        X,
        W,
        RSTD,
        DX,
        DW_PARTIAL,
        dy_row_stride,
        x_row_stride,
        dx_row_stride,
        n_rows,
        n_cols,
        rows_per_program,
        OFFSET: tl.constexpr,
        GEMMA: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32) + OFFSET
        dw_acc = tl.zeros([BLOCK], dtype=tl.float32)
        # int64 bounds give an int64 loop index: row offsets may pass 2**31 elements.
        row_start = pid.to(tl.int64) * rows_per_program
        row_stop = tl.minimum(row_start + rows_per_program, n_rows)
        for row64 in range(row_start, row_stop):
            x = tl.load(X + row64 * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row64 * dy_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + row64)
            normed = x * rstd
            dn = dy * w
            proj = tl.sum(dn * normed, axis=0) / n_cols
            dx = (dn - normed * proj) * rstd
            tl.store(DX + row64 * dx_row_stride + cols, dx.to(DX.dtype.element_ty), mask=mask)
            if GEMMA:
                dw_acc += dy * normed
            else:
                dw_acc += dy * normed.to(X.dtype.element_ty).to(tl.float32)
        tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw_acc, mask=mask)

    return SimpleNamespace(
        next_power_of_2=triton.next_power_of_2,
        forward=rms_norm_forward_kernel,
        backward=rms_norm_backward_kernel,
    )


def _num_warps(block: int) -> int:
    if block >= 16384:
        return 16
    if block >= 4096:
        return 8
    return 4


def _triton_forward(
    rows: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, gemma: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = _triton_kernels()
    n_rows, hidden = rows.shape
    y = torch.empty(
        (n_rows, hidden), dtype=_out_dtype(rows.dtype, weight.dtype, gemma), device=rows.device
    )
    rstd = torch.empty((n_rows, 1), dtype=torch.float32, device=rows.device)
    if n_rows == 0:
        return y, rstd
    block = kernels.next_power_of_2(hidden)
    kernels.forward[(n_rows,)](
        rows,
        weight.contiguous(),
        y,
        rstd,
        rows.stride(0),
        y.stride(0),
        hidden,
        EPS=eps,
        OFFSET=offset,
        GEMMA=gemma,
        BLOCK=block,
        num_warps=_num_warps(block),
    )
    return y, rstd


def _backward_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        # Enough programs to fill the GPU; each adds one row of partial weight gradients.
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        # The interpreter pays per program instance: few programs, many rows each.
        target = 4
    return max(1, min(n_rows, target))


def _triton_backward(
    grad_rows: torch.Tensor,
    rows: torch.Tensor,
    weight: torch.Tensor,
    rstd: torch.Tensor,
    offset: float,
    gemma: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    kernels = _triton_kernels()
    n_rows, hidden = rows.shape
    dx = torch.empty((n_rows, hidden), dtype=rows.dtype, device=rows.device)
    if n_rows == 0:
        return dx, torch.zeros_like(weight)
    programs = _backward_programs(n_rows, rows.device)
    rows_per_program = -(-n_rows // programs)
    programs = -(-n_rows // rows_per_program)
    dw_partial = torch.empty((programs, hidden), dtype=torch.float32, device=rows.device)
    block = kernels.next_power_of_2(hidden)
    kernels.backward[(programs,)](
        grad_rows,
        rows,
        weight.contiguous(),
        rstd,
        dx,
        dw_partial,
        grad_rows.stride(0),
        rows.stride(0),
        dx.stride(0),
        n_rows,
        hidden,
        rows_per_program,
        OFFSET=offset,
        GEMMA=gemma,
        BLOCK=block,
        num_warps=_num_warps(block),
    )
    return dx, dw_partial.sum(0).to(weight.dtype)
