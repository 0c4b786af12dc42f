"""The triton half of the fused linear + log-softmax ops: one program per row of logits.

Each program computes its row's log-sum-exp with an online softmax over vocabulary blocks
(or reads it back), the target's log-prob, and optionally writes ``softmax - onehot(target)``
over the logits in their dtype (the gradient of ``-logp`` w.r.t. the row's logits). The
matmuls around it are torch's (:mod:`workbench.kernels.linear_softmax`).

With a softcap (``SOFTCAP``), each loaded block ``z`` becomes ``c = scale * tanh(z / cap)``
(``scale = cap / temperature``) before the softmax, and the gradient written is w.r.t. ``z``:
``(softmax(c) - onehot) * (1 - tanh(z / cap)^2) / temperature``. ``tanh`` is written with
the sigmoid (``tanh(y) = 2 * sigmoid(2 * y) - 1``, ``1 - tanh(y)^2 = 4 * s * (1 - s)``), which
the interpreter and every GPU backend have.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch


@functools.cache
def compiled_kernels() -> SimpleNamespace:
    """Compile-on-demand kernel; defined here so that importing this module needs no triton."""
    import triton
    import triton.language as tl

    # Triton reads a kernel's parameter annotations as compile-time types, so its parameters
    # stay unannotated; and triton ships no types, so its decorator is untyped to mypy.
    @triton.jit  # type: ignore[untyped-decorator]
    def row_log_softmax_kernel(  # type: ignore[no-untyped-def]
        LOGITS,
        TARGETS,
        VALID,
        LOGP,
        LSE,
        logits_row_stride,
        n_cols,
        cap,
        scale,
        BLOCK: tl.constexpr,
        READ_LSE: tl.constexpr,
        WRITE_LOGP: tl.constexpr,
        WRITE_GRAD: tl.constexpr,
        SOFTCAP: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        row_ptr = LOGITS + row * logits_row_stride
        target = tl.load(TARGETS + row)
        if READ_LSE:
            lse = tl.load(LSE + row)
        else:
            # Online softmax: running max m and running sum d of exp(x - m).
            cols = tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            if SOFTCAP:
                x = scale * (2.0 * tl.sigmoid(2.0 * x / cap) - 1.0)
            x = tl.where(mask, x, float("-inf"))
            m = tl.max(x, axis=0)
            d = tl.sum(tl.exp(x - m), axis=0)
            for start in range(BLOCK, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                if SOFTCAP:
                    x = scale * (2.0 * tl.sigmoid(2.0 * x / cap) - 1.0)
                x = tl.where(mask, x, float("-inf"))
                m_new = tl.maximum(m, tl.max(x, axis=0))
                d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
                m = m_new
            lse = m + tl.log(d)
            tl.store(LSE + row, lse)
        if WRITE_LOGP:
            picked = tl.load(row_ptr + target).to(tl.float32)
            if SOFTCAP:
                picked = scale * (2.0 * tl.sigmoid(2.0 * picked / cap) - 1.0)
            valid = tl.load(VALID + row)
            tl.store(LOGP + row, tl.where(valid, picked - lse, 0.0))
        if WRITE_GRAD:
            # D = softmax - onehot(target) (times dc/dz under a softcap), written over the
            # logits in their dtype.
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < n_cols
                x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                if SOFTCAP:
                    s = tl.sigmoid(2.0 * x / cap)
                    c = scale * (2.0 * s - 1.0)
                    d_c = tl.exp(c - lse) - tl.where(cols == target, 1.0, 0.0)
                    # dc/dz = (scale / cap) * (1 - tanh^2) = (scale / cap) * 4 * s * (1 - s)
                    d_x = d_c * (4.0 * s * (1.0 - s)) * (scale / cap)
                else:
                    d_x = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
                tl.store(row_ptr + cols, d_x.to(LOGITS.dtype.element_ty), mask=mask)

    return SimpleNamespace(
        next_power_of_2=triton.next_power_of_2, row_log_softmax=row_log_softmax_kernel
    )


def run_rows(
    kernels: SimpleNamespace,
    block: int,
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    logprobs: torch.Tensor | None,
    lse: torch.Tensor,
    *,
    read_lse: bool,
    write_grad: bool,
    softcap: tuple[float, float] | None = None,
) -> None:
    """One kernel program per row of ``logits`` (module docstring); ``softcap``:
    ``(cap, scale)`` of ``c = scale * tanh(z / cap)``, or None."""
    rows, vocab = logits.shape
    if rows == 0:
        return
    write_logp = logprobs is not None
    kernels.row_log_softmax[(rows,)](
        logits,
        targets,
        valid,
        logprobs if write_logp else lse,  # a placeholder pointer when unused
        lse,
        logits.stride(0),
        vocab,
        1.0 if softcap is None else float(softcap[0]),
        1.0 if softcap is None else float(softcap[1]),
        BLOCK=block,
        READ_LSE=read_lse,
        WRITE_LOGP=write_logp,
        WRITE_GRAD=write_grad,
        SOFTCAP=softcap is not None,
        num_warps=8 if block >= 2048 else 4,
    )
