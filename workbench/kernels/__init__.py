"""Fused ops (Triton on GPUs, chunked torch elsewhere); torch and triton imports only."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Public ops, imported on first access (PEP 562): op name -> module in this package.
_LAZY_OPS = {
    "fused_linear_cross_entropy": "fused_linear_cross_entropy",
    "fused_linear_token_logprobs": "fused_linear_token_logprobs",
}

__all__ = sorted(_LAZY_OPS)


def __getattr__(name: str) -> Any:
    if name in _LAZY_OPS:
        module = importlib.import_module(f"{__name__}.{_LAZY_OPS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``workbench.kernels.<op>`` naming the op, not its same-named module.

    Importing a submodule binds it as an attribute of the package; for the ops above that
    would shadow the lazily exported function (``from workbench.kernels import
    fused_linear_cross_entropy`` would return a module once anything had imported it).
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY_OPS and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
