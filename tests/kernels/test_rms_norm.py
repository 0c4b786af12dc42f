"""rms_norm: torch and triton (interpreter) paths against a float64 reference and LlamaRMSNorm.

Inputs are fresh random draws on every run; the seed is part of every failure message
(set WORKBENCH_TEST_SEED to replay one). Each value's error is measured against the size of
the terms it is computed from (for the output, the output itself), so cancellation in a
sum does not pass for a kernel bug nor fail a correct kernel; thresholds fit the dtype. A NaN
never passes (comparisons are ``error <= tol``, False for NaN; outputs are checked finite).
"""

from __future__ import annotations

import os

# The triton path runs on CPU only under the interpreter, which must be on before triton is
# imported. tests/kernels/conftest.py may set it too; setdefault keeps both harmless.
os.environ.setdefault("TRITON_INTERPRET", "1")

import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.kernels import rms_norm as rms_norm_module  # noqa: E402
from workbench.kernels._backend import triton_installed  # noqa: E402
from workbench.kernels.rms_norm import rms_norm  # noqa: E402

HAS_TRITON = triton_installed()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

# Largest error of a value relative to its scale, per dtype.
TOLERANCES = {
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    # bf16 keeps 8 significant bits; the interpreter also rounds float32 -> bfloat16 toward
    # zero (GPUs round to nearest): up to two bf16 ulps (2**-7) where a value is rounded twice.
    torch.bfloat16: 2e-2,
}

# (shape, eps): one row, hidden size 1, an odd hidden size, 3-D input.
SHAPES = [
    ((1, 1), 1e-6),
    ((1, 97), 1e-6),
    ((3, 97), 1e-6),
    ((2, 3, 64), 1e-5),
    ((5, 1), 0.25),
]


@pytest.fixture
def seed() -> int:
    value = os.environ.get("WORKBENCH_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


def reference(x, weight, eps, grad_out):
    """Naive float64 RMSNorm, its autograd gradients, and the size of the terms of each.

    Returns ``(values, scales)``, each a tuple ``(y, dx, dw)``. A gradient's scale is the
    sum of the absolute values of the terms it adds up: with ``n = x * rstd`` and
    ``dn = dy * w``, ``dx = rstd * (dn - n * mean(dn * n))`` and ``dw = sum_rows(dy * n)``.
    """
    xd = x.detach().double().requires_grad_()
    wd = weight.detach().double().requires_grad_()
    dy = grad_out.double()
    rstd = 1.0 / torch.sqrt(xd.detach().pow(2).mean(-1, keepdim=True) + eps)
    y = wd * (xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + eps))
    y.backward(dy)
    n, dn = xd.detach() * rstd, dy * wd.detach()
    dx_scale = rstd * (dn.abs() + n.abs() * (dn * n).abs().mean(-1, keepdim=True))
    dw_scale = (dy * n).abs().reshape(-1, n.shape[-1]).sum(0)
    return (y.detach(), xd.grad, wd.grad), (y.detach().abs(), dx_scale, dw_scale)


def make_inputs(shape, dtype, seed, zero_row=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(dtype)
    if zero_row:
        x.view(-1, shape[-1])[0] = 0.0  # rstd = 1/sqrt(eps): large, but finite
    weight = (1.0 + 0.5 * torch.randn(shape[-1], generator=gen)).to(dtype)
    grad_out = torch.randn(shape, generator=gen).to(dtype)
    return x, weight, grad_out


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


def check_all(actual, x, weight, eps, grad_out, dtype, seed):
    values, scales = reference(x, weight, eps, grad_out)
    for name, got, want, scale in zip(("output", "grad x", "grad weight"), actual, values, scales):
        if got is not None:
            check_close(name, got, want, scale, dtype, seed)


def run_and_check(backend, shape, eps, dtype, seed, zero_row=False):
    x, weight, grad_out = make_inputs(shape, dtype, seed, zero_row)
    originals = [t.clone() for t in (x, weight, grad_out)]
    x.requires_grad_()
    weight.requires_grad_()

    y = rms_norm(x, weight, eps, backend=backend)
    y.backward(grad_out)

    assert y.dtype == dtype and x.grad.dtype == dtype and weight.grad.dtype == dtype
    check_all((y.detach(), x.grad, weight.grad), x, weight, eps, grad_out, dtype, seed)
    for before, after in zip(originals, (x, weight, grad_out)):
        assert torch.equal(before, after.detach()), f"an input was modified (seed {seed})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,eps", SHAPES)
def test_torch_path_matches_float64_reference(shape, eps, dtype, seed):
    run_and_check("torch", shape, eps, dtype, seed)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,eps", SHAPES)
def test_triton_path_matches_float64_reference(shape, eps, dtype, seed):
    run_and_check("triton", shape, eps, dtype, seed)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_zero_row_and_large_fp16_values_stay_finite(backend, seed):
    run_and_check(backend, (3, 33), 1e-6, torch.float32, seed, zero_row=True)
    # x^2 overflows fp16 (max 65504) but the statistics are taken in float32.
    x, weight, grad_out = make_inputs((2, 40), torch.float16, seed)
    x = (x.float() * 1000).half().requires_grad_()
    y = rms_norm(x, weight, 1e-6, backend=backend)
    y.backward(grad_out)
    check_all((y.detach(), x.grad, None), x, weight, 1e-6, grad_out, torch.float16, seed)


def test_torch_path_across_chunks(monkeypatch, seed):
    # 7 rows of 97 in chunks of 2 rows: several chunks and a short last one.
    monkeypatch.setattr(rms_norm_module, "_TORCH_CHUNK_ELEMENTS", 2 * 97)
    run_and_check("torch", (7, 97), 1e-6, torch.float32, seed)
    run_and_check("torch", (7, 97), 1e-6, torch.bfloat16, seed)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("which", ["x", "weight"])
def test_gradient_for_one_input_only(backend, which, seed):
    x, weight, grad_out = make_inputs((3, 20), torch.float32, seed)
    target = x if which == "x" else weight
    target.requires_grad_()
    rms_norm(x, weight, 1e-6, backend=backend).backward(grad_out)
    grads = (None, target.grad, None) if which == "x" else (None, None, target.grad)
    check_all(grads, x, weight, 1e-6, grad_out, torch.float32, seed)
    other = weight if which == "x" else x
    assert other.grad is None


def test_non_contiguous_input_and_gradient(seed):
    x, weight, grad_out = make_inputs((6, 40), torch.float32, seed)
    x_t = x.t().contiguous().t().requires_grad_()  # same values, column-major strides
    grad_out = grad_out[:1].expand(6, 40)  # row stride 0, as a broadcast gradient arrives
    backends = ["torch", "triton"] if HAS_TRITON else ["torch"]
    for backend in backends:
        x_t.grad = None
        y = rms_norm(x_t, weight, 1e-6, backend=backend)
        y.backward(grad_out)
        check_all((y.detach(), x_t.grad, None), x, weight, 1e-6, grad_out, torch.float32, seed)


# --- agreement with transformers' LlamaRMSNorm (what the patched model replaces) ----------


def llama_rms_norm(weight, eps):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    module = LlamaRMSNorm(weight.shape[0], eps=eps).to(weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
    return module


@pytest.mark.parametrize(
    "x_dtype,w_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),  # weights kept in fp32, activations in bf16
    ],
    ids=str,
)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_matches_llama_rms_norm(backend, x_dtype, w_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shape, eps = (2, 3, 97), 1e-5
    x = torch.randn(shape, generator=gen).to(x_dtype)
    weight = (1.0 + 0.5 * torch.randn(shape[-1], generator=gen)).to(w_dtype)
    module = llama_rms_norm(weight, eps)
    x_ref = x.clone().requires_grad_()
    y_ref = module(x_ref)
    grad_out = torch.randn(shape, generator=gen).to(y_ref.dtype)
    y_ref.backward(grad_out)

    x_ours = x.clone().requires_grad_()
    w_ours = weight.clone().requires_grad_()
    y = rms_norm(x_ours, w_ours, eps, backend=backend)
    y.backward(grad_out)

    assert y.dtype == y_ref.dtype
    assert x_ours.grad.dtype == x_dtype and w_ours.grad.dtype == w_dtype
    if backend == "torch":
        # The torch path runs LlamaRMSNorm's own op sequence: the forward agrees bit for bit.
        assert torch.equal(y, y_ref), f"seed {seed}"
    # Gradients (and the interpreter's bf16) agree within the dtype's tolerance.
    tol_dtype = torch.bfloat16 if torch.bfloat16 in (x_dtype, w_dtype) else x_dtype
    _, scales = reference(x, weight, eps, grad_out)
    llama = (y_ref.detach(), x_ref.grad, module.weight.grad)
    for name, got, want, scale in zip(
        ("output", "grad x", "grad weight"), (y.detach(), x_ours.grad, w_ours.grad), llama, scales
    ):
        check_close(name, got, want.double(), scale, tol_dtype, seed)


# --- dispatch and errors -------------------------------------------------------------------


def test_auto_on_cpu_is_the_torch_path(seed):
    x, weight, _ = make_inputs((4, 50), torch.bfloat16, seed)
    assert torch.equal(rms_norm(x, weight, backend="auto"), rms_norm(x, weight, backend="torch"))


def test_bad_arguments_are_refused(monkeypatch):
    x, weight = torch.randn(2, 8), torch.ones(8)
    with pytest.raises(ValueError, match="backend"):
        rms_norm(x, weight, backend="cuda")
    with pytest.raises(ValueError, match="weight of shape"):
        rms_norm(x, torch.ones(7))
    if HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            rms_norm(x, weight, backend="triton")


def test_module_imports_and_runs_without_triton():
    """Running the op on CPU never imports triton, and the module imports where it is absent."""
    code = (
        "import importlib, sys\n"
        "import torch\n"
        "import workbench.kernels.rms_norm as module\n"
        "def run():\n"
        "    rms_norm = module.rms_norm\n"
        "    x = torch.randn(3, 5, requires_grad=True)\n"
        "    rms_norm(x, torch.ones(5)).sum().backward()\n"
        "run()\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "sys.modules['triton'] = None  # now as if it were not installed\n"
        "module = importlib.reload(module)\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
