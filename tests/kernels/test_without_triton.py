"""The elementwise kernel modules import and run on CPU where triton is absent, and running
them on CPU never imports triton (it is an optional dependency).

Each case runs in a fresh interpreter without ``TRITON_INTERPRET``: once as installed, then
with ``sys.modules['triton'] = None`` (imports of triton fail) and the module reloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# module, name of the op, a call of it on small CPU tensors whose result is summed and
# back-propagated
CASES = {
    "rms_norm": "op(x, torch.ones(5))",
    "swiglu": "op(x, torch.randn(3, 5))",
}


@pytest.mark.parametrize("module_name", sorted(CASES))
def test_module_imports_and_runs_without_triton(module_name):
    code = (
        "import importlib, sys\n"
        "import torch\n"
        f"import workbench.kernels.{module_name} as module\n"
        "def run():\n"
        f"    op = module.{module_name}\n"
        "    x = torch.randn(3, 5, requires_grad=True)\n"
        f"    {CASES[module_name]}.sum().backward()\n"
        "    assert x.grad is not None and bool(torch.isfinite(x.grad).all())\n"
        "run()\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "sys.modules['triton'] = None  # now as if it were not installed\n"
        "module = importlib.reload(module)\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
