"""What several kernel test files share: the backends to run, the linear-softmax shapes,
and the elementwise tests' (rms_norm, swiglu) tolerance check.

In ``check_close`` each value's error is measured against the size of the terms it is computed
from, so cancellation in a sum neither passes for a kernel bug nor fails a correct kernel; a NaN
never passes (comparisons are ``error <= tol``, False for NaN; outputs are checked finite).
"""

from __future__ import annotations

import pytest
import torch

from workbench.kernels.dispatch import triton_installed

HAS_TRITON = triton_installed()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]

# --- fused linear cross-entropy / token log-probs -----------------------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# Rows per chunk to run: None: the default (on the torch path these small inputs take the
# full-logits route); 2: a sweep over several chunks; ONE_CHUNK: a sweep whose single chunk
# holds every row.
ONE_CHUNK = 10**6
CHUNK_ROWS = {"torch": (None, 2, ONE_CHUNK), "triton": (None, 2)}

# name: (leading shape, hidden size, vocabulary, which targets are ignore_index)
SHAPES = {
    "one_row": (1, 8, 97, "none"),
    "prime_vocab": (6, 16, 331, "some"),
    "all_ignored": (4, 8, 97, "all"),
    "batch_by_seq": ((2, 3), 8, 97, "some"),
}


def reduce_like(reduction):
    """The float64 reference of the loss from the target log-probs."""

    def reduce(logp, valid):
        if reduction == "none":
            return -logp
        total = -logp.sum()
        return total / valid.sum().clamp(min=1) if reduction == "mean" else total

    return reduce


# --- elementwise ops (rms_norm, swiglu) ---------------------------------------------------

# Largest error of a value relative to its scale, per dtype.
TOLERANCES = {
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    # bf16 keeps 8 significant bits; the interpreter also rounds float32 -> bfloat16 toward
    # zero (GPUs round to nearest): up to two bf16 ulps (2**-7) where a value is rounded twice.
    torch.bfloat16: 2e-2,
}


def check_close(name, actual, expected, scale, dtype, seed):
    """Every ``|actual - expected| <= tol * scale`` (elementwise), and no value is NaN/inf."""
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (seed {seed})"
    tol = TOLERANCES[dtype]
    # An absolute error below the dtype's smallest normal number always passes.
    tiny = torch.finfo(dtype).tiny
    err = ((actual.double() - expected).abs() - tiny).clamp_min(0) / scale.clamp_min(tiny)
    worst = err.max().item()
    assert worst <= tol, f"{name}: error {worst:.3g} of its scale > {tol} (seed {seed})"
