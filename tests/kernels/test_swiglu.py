"""swiglu: torch and triton (interpreter) paths against a float64 reference and Llama's MLP.

Inputs are fresh random draws on every run; the seed is part of every failure message
(set WORKBENCH_TEST_SEED to replay one). Each value's error is measured against the size of
the terms it is computed from, with thresholds that fit the dtype. A NaN never passes
(comparisons are ``error <= tol``, False for NaN; outputs are checked finite).
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

from workbench.kernels._backend import triton_installed  # noqa: E402
from workbench.kernels.swiglu import swiglu  # noqa: E402

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

# One element, one row, odd sizes, 3-D, and more than one triton block (1024) with a remainder.
SHAPES = [(1, 1), (1, 97), (3, 97), (2, 3, 64), (3, 701)]


@pytest.fixture
def seed() -> int:
    value = os.environ.get("WORKBENCH_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


def reference(gate, up, grad_out):
    """Naive float64 ``silu(gate) * up``, its gradients, and the size of their terms.

    Returns ``(values, scales)``, each ``(out, dgate, dup)``; with ``s = sigmoid(g)``,
    ``dgate = dy * u * s * (1 + g * (1 - s))`` and ``dup = dy * g * s``.
    """
    g = gate.detach().double().requires_grad_()
    u = up.detach().double().requires_grad_()
    dy = grad_out.double()
    out = g * torch.sigmoid(g) * u
    out.backward(dy)
    gd, ud = g.detach(), u.detach()
    s = torch.sigmoid(gd)
    dgate_scale = (dy * ud * s).abs() * (1.0 + (gd * (1.0 - s)).abs())
    dup_scale = (dy * gd * s).abs()
    return (out.detach(), g.grad, u.grad), (out.detach().abs(), dgate_scale, dup_scale)


def make_inputs(shape, dtype, seed, gate_scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    gate = (gate_scale * torch.randn(shape, generator=gen)).to(dtype)
    up = torch.randn(shape, generator=gen).to(dtype)
    grad_out = torch.randn(shape, generator=gen).to(dtype)
    return gate, up, grad_out


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


def check_all(actual, gate, up, grad_out, dtype, seed):
    values, scales = reference(gate, up, grad_out)
    for name, got, want, scale in zip(("output", "grad gate", "grad up"), actual, values, scales):
        if got is not None:
            check_close(name, got, want, scale, dtype, seed)


def run_and_check(backend, gate, up, grad_out, seed):
    dtype = gate.dtype
    originals = [t.clone() for t in (gate, up, grad_out)]
    gate.requires_grad_()
    up.requires_grad_()

    out = swiglu(gate, up, backend=backend)
    out.backward(grad_out)

    assert out.dtype == dtype and gate.grad.dtype == dtype and up.grad.dtype == dtype
    check_all((out.detach(), gate.grad, up.grad), gate, up, grad_out, dtype, seed)
    for before, after in zip(originals, (gate, up, grad_out)):
        assert torch.equal(before, after.detach()), f"an input was modified (seed {seed})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_path_matches_float64_reference(shape, dtype, seed):
    run_and_check("torch", *make_inputs(shape, dtype, seed), seed)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_path_matches_float64_reference(shape, dtype, seed):
    run_and_check("triton", *make_inputs(shape, dtype, seed), seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
# The interpreter evaluates exp in numpy, which warns where float32 overflows to inf.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_saturated_gates_stay_finite(backend, dtype, seed):
    # exp(-g) overflows float32 for g < -88.7: sigmoid must come out 0, not NaN.
    gate, up, grad_out = make_inputs((2, 8), dtype, seed)
    extremes = torch.tensor([-1e4, -100.0, -88.5, -20.0, 0.0, 20.0, 100.0, 1e4])
    gate[0] = extremes.to(dtype)
    run_and_check(backend, gate, up, grad_out, seed)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("which", ["gate", "up"])
def test_gradient_for_one_input_only(backend, which, seed):
    gate, up, grad_out = make_inputs((3, 20), torch.float32, seed)
    target = gate if which == "gate" else up
    target.requires_grad_()
    swiglu(gate, up, backend=backend).backward(grad_out)
    grads = (None, target.grad, None) if which == "gate" else (None, None, target.grad)
    check_all(grads, gate, up, grad_out, torch.float32, seed)
    other = up if which == "gate" else gate
    assert other.grad is None


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_non_contiguous_inputs_and_gradient(backend, seed):
    gate, up, grad_out = make_inputs((6, 40), torch.float32, seed)
    gate_t = gate.t().contiguous().t().requires_grad_()  # same values, column-major strides
    up_t = up.t().contiguous().t().requires_grad_()
    grad_out = grad_out[:1].expand(6, 40)  # stride 0, as a broadcast gradient arrives
    out = swiglu(gate_t, up_t, backend=backend)
    out.backward(grad_out)
    check_all((out.detach(), gate_t.grad, up_t.grad), gate, up, grad_out, torch.float32, seed)


# --- agreement with Llama's MLP: act_fn(gate_proj(x)) * up_proj(x) ------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_matches_llama_mlp_activation(backend, dtype, seed):
    from transformers.activations import ACT2FN

    act_fn = ACT2FN["silu"]  # what LlamaMLP uses for hidden_act="silu"
    gate, up, grad_out = make_inputs((2, 3, 97), dtype, seed)
    gate_ref, up_ref = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out_ref = act_fn(gate_ref) * up_ref
    out_ref.backward(grad_out)

    gate_ours, up_ours = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out = swiglu(gate_ours, up_ours, backend=backend)
    out.backward(grad_out)

    assert out.dtype == out_ref.dtype
    if backend == "torch":
        # The torch path runs the same ops as autograd through the unfused MLP: bit for bit.
        assert torch.equal(out, out_ref), f"seed {seed}"
        assert torch.equal(gate_ours.grad, gate_ref.grad), f"seed {seed}"
        assert torch.equal(up_ours.grad, up_ref.grad), f"seed {seed}"
    _, scales = reference(gate, up, grad_out)
    llama = (out_ref.detach(), gate_ref.grad, up_ref.grad)
    ours = (out.detach(), gate_ours.grad, up_ours.grad)
    for name, got, want, scale in zip(("output", "grad gate", "grad up"), ours, llama, scales):
        check_close(name, got, want.double(), scale, dtype, seed)


# --- dispatch and errors -------------------------------------------------------------------


def test_auto_on_cpu_is_the_torch_path(seed):
    gate, up, _ = make_inputs((4, 50), torch.bfloat16, seed)
    assert torch.equal(swiglu(gate, up, backend="auto"), swiglu(gate, up, backend="torch"))


def test_bad_arguments_are_refused(monkeypatch):
    gate, up = torch.randn(2, 8), torch.randn(2, 8)
    with pytest.raises(ValueError, match="backend"):
        swiglu(gate, up, backend="cuda")
    with pytest.raises(ValueError, match="same shape"):
        swiglu(gate, up[:, :7])
    if HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            swiglu(gate, up, backend="triton")


def test_module_imports_and_runs_without_triton():
    """Running the op on CPU never imports triton, and the module imports where it is absent."""
    code = (
        "import importlib, sys\n"
        "import torch\n"
        "import workbench.kernels.swiglu as module\n"
        "def run():\n"
        "    swiglu = module.swiglu\n"
        "    x = torch.randn(3, 5, requires_grad=True)\n"
        "    swiglu(x, torch.randn(3, 5)).sum().backward()\n"
        "run()\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
        "sys.modules['triton'] = None  # now as if it were not installed\n"
        "module = importlib.reload(module)\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
