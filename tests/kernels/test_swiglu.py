"""swiglu: torch and triton (interpreter) paths against a float64 reference and the MLPs of
Llama (silu) and Gemma (gelu_tanh).

Inputs are fresh random draws on every run; the seed is part of every failure message
(set WORKBENCH_TEST_SEED to replay one). Each value's error is measured against the size of
the terms it is computed from, with thresholds that fit the dtype. A NaN never passes
(comparisons are ``error <= tol``, False for NaN; outputs are checked finite).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.kernels.helpers import BACKENDS, HAS_TRITON, check_close, needs_triton
from workbench.kernels.swiglu import swiglu

# The interpreter evaluates exp in numpy, which warns where float32 overflows to inf (the
# sigmoid still comes out 0 or 1): silu's exp(-g) only for g < -88.7, gelu_tanh's
# exp(-2 * k * (g + c * g^3)) from |g| of about 9.5, well within ordinary random gates.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

# One element, one row, odd sizes, 3-D, and more than one triton block (1024) with a remainder.
SHAPES = [(1, 1), (1, 97), (3, 97), (2, 3, 64), (3, 701)]
ACTIVATIONS = ["silu", "gelu_tanh"]
# transformers' names of the two (ACT2FN): Llama's hidden_act, Gemma's hidden_activation.
HF_NAMES = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}


def reference(gate, up, grad_out, activation="silu"):
    """Naive float64 ``act(gate) * up``, its gradients, and the size of their terms.

    Returns ``(values, scales)``, each ``(out, dgate, dup)``. silu, with ``s = sigmoid(g)``:
    ``dgate = dy * u * s * (1 + g * (1 - s))``, ``dup = dy * g * s``. gelu_tanh, the textbook
    ``0.5 * g * (1 + tanh(k * (g + c * g^3)))``, with ``t`` that tanh:
    ``dgate = dy * u * (0.5 * (1 + t) + 0.5 * g * (1 - t^2) * k * (1 + 3 * c * g^2))``; its
    ``1 + t`` (how torch computes it, and so the unfused model) is sized ``1 + |t|``: for
    negative gates it cancels, and the result keeps float32's error of the terms' size.
    """
    g = gate.detach().double().requires_grad_()
    u = up.detach().double().requires_grad_()
    dy = grad_out.double()
    gd, ud = g.detach(), u.detach()
    if activation == "silu":
        out = g * torch.sigmoid(g) * u
        s = torch.sigmoid(gd)
        first, second = s, gd * s * (1.0 - s)  # act = g * first
    else:
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        out = 0.5 * g * (1.0 + torch.tanh(k * (g + c * g**3))) * u
        t = torch.tanh(k * (gd + c * gd**3))
        first = 0.5 * (1.0 + t.abs())
        second = 0.5 * gd * (1.0 - t**2) * k * (1.0 + 3.0 * c * gd**2)
    out.backward(dy)
    out_scale = (gd * ud).abs() * first.abs()
    dgate_scale = (dy * ud).abs() * (first.abs() + second.abs())
    dup_scale = (dy * gd).abs() * first.abs()
    return (out.detach(), g.grad, u.grad), (out_scale, dgate_scale, dup_scale)


def make_inputs(shape, dtype, seed, gate_scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    gate = (gate_scale * torch.randn(shape, generator=gen)).to(dtype)
    up = torch.randn(shape, generator=gen).to(dtype)
    grad_out = torch.randn(shape, generator=gen).to(dtype)
    return gate, up, grad_out


def check_all(actual, gate, up, grad_out, dtype, seed, activation="silu"):
    values, scales = reference(gate, up, grad_out, activation)
    for name, got, want, scale in zip(("output", "grad gate", "grad up"), actual, values, scales):
        if got is not None:
            check_close(name, got, want, scale, dtype, seed)


def run_and_check(backend, gate, up, grad_out, seed, activation="silu"):
    dtype = gate.dtype
    originals = [t.clone() for t in (gate, up, grad_out)]
    gate.requires_grad_()
    up.requires_grad_()

    out = swiglu(gate, up, backend=backend, activation=activation)
    out.backward(grad_out)

    assert out.dtype == dtype and gate.grad.dtype == dtype and up.grad.dtype == dtype
    check_all((out.detach(), gate.grad, up.grad), gate, up, grad_out, dtype, seed, activation)
    for before, after in zip(originals, (gate, up, grad_out)):
        assert torch.equal(before, after.detach()), f"an input was modified (seed {seed})"


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_path_matches_float64_reference(shape, dtype, activation, kernel_seed):
    run_and_check("torch", *make_inputs(shape, dtype, kernel_seed), kernel_seed, activation)


@needs_triton
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_path_matches_float64_reference(shape, dtype, activation, kernel_seed):
    run_and_check("triton", *make_inputs(shape, dtype, kernel_seed), kernel_seed, activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_gates_stay_finite(backend, dtype, activation, kernel_seed):
    # exp(-g) overflows float32 for g < -88.7: sigmoid must come out 0, not NaN (gelu_tanh's
    # sigmoid of 2 * k * (g + c * g^3) overflows from |g| of about 12).
    gate, up, grad_out = make_inputs((2, 8), dtype, kernel_seed)
    extremes = torch.tensor([-1e4, -100.0, -88.5, -20.0, 0.0, 20.0, 100.0, 1e4])
    gate[0] = extremes.to(dtype)
    run_and_check(backend, gate, up, grad_out, kernel_seed, activation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["gate", "up"])
def test_gradient_for_one_input_only(backend, which, kernel_seed):
    gate, up, grad_out = make_inputs((3, 20), torch.float32, kernel_seed)
    target = gate if which == "gate" else up
    target.requires_grad_()
    swiglu(gate, up, backend=backend).backward(grad_out)
    grads = (None, target.grad, None) if which == "gate" else (None, None, target.grad)
    check_all(grads, gate, up, grad_out, torch.float32, kernel_seed)
    other = up if which == "gate" else gate
    assert other.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs_and_gradient(backend, kernel_seed):
    gate, up, grad_out = make_inputs((6, 40), torch.float32, kernel_seed)
    gate_t = gate.t().contiguous().t().requires_grad_()  # same values, column-major strides
    up_t = up.t().contiguous().t().requires_grad_()
    grad_out = grad_out[:1].expand(6, 40)  # stride 0, as a broadcast gradient arrives
    out = swiglu(gate_t, up_t, backend=backend)
    out.backward(grad_out)
    check_all(
        (out.detach(), gate_t.grad, up_t.grad), gate, up, grad_out, torch.float32, kernel_seed
    )


# --- agreement with Llama's and Gemma's MLP: act_fn(gate_proj(x)) * up_proj(x) -----------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_the_transformers_mlp_activation(backend, dtype, activation, kernel_seed):
    from transformers.activations import ACT2FN

    # What LlamaMLP uses for hidden_act="silu", GemmaMLP for "gelu_pytorch_tanh".
    act_fn = ACT2FN[HF_NAMES[activation]]
    gate, up, grad_out = make_inputs((2, 3, 97), dtype, kernel_seed)
    gate_ref, up_ref = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out_ref = act_fn(gate_ref) * up_ref
    out_ref.backward(grad_out)

    gate_ours, up_ours = gate.clone().requires_grad_(), up.clone().requires_grad_()
    out = swiglu(gate_ours, up_ours, backend=backend, activation=activation)
    out.backward(grad_out)

    assert out.dtype == out_ref.dtype
    if backend == "torch":
        # The torch path runs the same ops as autograd through the unfused MLP: bit for bit.
        assert torch.equal(out, out_ref), f"seed {kernel_seed}"
        assert torch.equal(gate_ours.grad, gate_ref.grad), f"seed {kernel_seed}"
        assert torch.equal(up_ours.grad, up_ref.grad), f"seed {kernel_seed}"
    _, scales = reference(gate, up, grad_out, activation)
    llama = (out_ref.detach(), gate_ref.grad, up_ref.grad)
    ours = (out.detach(), gate_ours.grad, up_ours.grad)
    for name, got, want, scale in zip(("output", "grad gate", "grad up"), ours, llama, scales):
        check_close(name, got, want.double(), scale, dtype, kernel_seed)


# --- dispatch and errors -------------------------------------------------------------------


def test_auto_on_cpu_is_the_torch_path(kernel_seed):
    gate, up, _ = make_inputs((4, 50), torch.bfloat16, kernel_seed)
    assert torch.equal(swiglu(gate, up, backend="auto"), swiglu(gate, up, backend="torch"))


def test_bad_arguments_are_refused(monkeypatch):
    gate, up = torch.randn(2, 8), torch.randn(2, 8)
    with pytest.raises(ValueError, match="backend"):
        swiglu(gate, up, backend="cuda")
    with pytest.raises(ValueError, match="same shape"):
        swiglu(gate, up[:, :7])
    with pytest.raises(ValueError, match="activation"):
        swiglu(gate, up, activation="gelu")
    if HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            swiglu(gate, up, backend="triton")
