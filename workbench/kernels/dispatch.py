"""Choosing an op's path: "auto" | "triton" | "torch" (shared by every op in this package)."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "triton", "torch")


@functools.cache
def triton_installed() -> bool:
    # Found without importing it: triton is optional and heavy.
    return importlib.util.find_spec("triton") is not None


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def use_triton(backend: str, x: torch.Tensor, fits_triton: bool = True) -> bool:
    """Resolve ``backend`` for tensors on ``x``'s device.

    "auto" takes triton on CUDA tensors when triton is installed and the shape fits the
    kernel (``fits_triton``), torch otherwise; "triton" says why it cannot run instead of
    falling back silently.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        return False
    if backend == "auto":
        return x.is_cuda and triton_installed() and fits_triton
    if not triton_installed():
        raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
    if not x.is_cuda and not interpreter_on():
        raise RuntimeError(
            "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is "
            "imported (tests only); use backend='torch' or 'auto' on CPU"
        )
    return True
