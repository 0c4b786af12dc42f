"""rms_norm: torch and triton (interpreter) paths against a float64 reference, LlamaRMSNorm
and GemmaRMSNorm (offset 1, scaled in float32).

Inputs are fresh random draws on every run; the seed is part of every failure message
(set WORKBENCH_TEST_SEED to replay one). Each value's error is measured against the size of
the terms it is computed from (for the output, the output itself), so cancellation in a
sum does not pass for a kernel bug nor fail a correct kernel; thresholds fit the dtype. A NaN
never passes (comparisons are ``error <= tol``, False for NaN; outputs are checked finite).
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels.helpers import BACKENDS, HAS_TRITON, check_close, needs_triton
from workbench.kernels import rms_norm as rms_norm_module
from workbench.kernels.rms_norm import rms_norm

# (shape, eps): one row, hidden size 1, an odd hidden size, 3-D input.
SHAPES = [
    ((1, 1), 1e-6),
    ((1, 97), 1e-6),
    ((3, 97), 1e-6),
    ((2, 3, 64), 1e-5),
    ((5, 1), 0.25),
]
# (offset, casting): Llama's norm, Gemma's, and an offset under Llama's casting.
STYLES = {"llama": (0.0, "llama"), "gemma": (1.0, "gemma"), "llama_offset": (0.5, "llama")}


def reference(x, weight, eps, grad_out, offset=0.0):
    """Naive float64 RMSNorm scaled by ``offset + weight``, its gradients, and the size of
    the terms of each.

    Returns ``(values, scales)``, each a tuple ``(y, dx, dw)``. A gradient's scale is the
    sum of the absolute values of the terms it adds up: with ``n = x * rstd`` and
    ``dn = dy * (offset + w)``, ``dx = rstd * (dn - n * mean(dn * n))`` and
    ``dw = sum_rows(dy * n)``.
    """
    xd = x.detach().double().requires_grad_()
    wd = weight.detach().double().requires_grad_()
    dy = grad_out.double()
    rstd = 1.0 / torch.sqrt(xd.detach().pow(2).mean(-1, keepdim=True) + eps)
    y = (offset + wd) * (xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + eps))
    y.backward(dy)
    n, dn = xd.detach() * rstd, dy * (offset + wd.detach())
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


def check_all(actual, x, weight, eps, grad_out, dtype, seed, offset=0.0):
    values, scales = reference(x, weight, eps, grad_out, offset)
    for name, got, want, scale in zip(("output", "grad x", "grad weight"), actual, values, scales):
        if got is not None:
            check_close(name, got, want, scale, dtype, seed)


def run_and_check(backend, shape, eps, dtype, seed, zero_row=False, style="llama"):
    offset, casting = STYLES[style]
    x, weight, grad_out = make_inputs(shape, dtype, seed, zero_row)
    originals = [t.clone() for t in (x, weight, grad_out)]
    x.requires_grad_()
    weight.requires_grad_()

    y = rms_norm(x, weight, eps, backend=backend, offset=offset, casting=casting)
    y.backward(grad_out)

    assert y.dtype == dtype and x.grad.dtype == dtype and weight.grad.dtype == dtype
    got = (y.detach(), x.grad, weight.grad)
    check_all(got, x, weight, eps, grad_out, dtype, seed, offset)
    for before, after in zip(originals, (x, weight, grad_out)):
        assert torch.equal(before, after.detach()), f"an input was modified (seed {seed})"


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,eps", SHAPES)
def test_torch_path_matches_float64_reference(shape, eps, dtype, style, kernel_seed):
    run_and_check("torch", shape, eps, dtype, kernel_seed, style=style)


@needs_triton
@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,eps", SHAPES)
def test_triton_path_matches_float64_reference(shape, eps, dtype, style, kernel_seed):
    run_and_check("triton", shape, eps, dtype, kernel_seed, style=style)


@pytest.mark.parametrize("style", ["llama", "gemma"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_row_and_large_fp16_values_stay_finite(backend, style, kernel_seed):
    run_and_check(backend, (3, 33), 1e-6, torch.float32, kernel_seed, zero_row=True, style=style)
    # x^2 overflows fp16 (max 65504) but the statistics are taken in float32.
    x, weight, grad_out = make_inputs((2, 40), torch.float16, kernel_seed)
    x = (x.float() * 1000).half().requires_grad_()
    y = rms_norm(x, weight, 1e-6, backend=backend)
    y.backward(grad_out)
    check_all((y.detach(), x.grad, None), x, weight, 1e-6, grad_out, torch.float16, kernel_seed)


@pytest.mark.parametrize("style", ["llama", "gemma"])
def test_torch_path_across_chunks(monkeypatch, style, kernel_seed):
    # 7 rows of 97 in chunks of 2 rows: several chunks and a short last one.
    monkeypatch.setattr(rms_norm_module, "TORCH_CHUNK_ELEMENTS", 2 * 97)
    run_and_check("torch", (7, 97), 1e-6, torch.float32, kernel_seed, style=style)
    run_and_check("torch", (7, 97), 1e-6, torch.bfloat16, kernel_seed, style=style)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["x", "weight"])
def test_gradient_for_one_input_only(backend, which, kernel_seed):
    x, weight, grad_out = make_inputs((3, 20), torch.float32, kernel_seed)
    target = x if which == "x" else weight
    target.requires_grad_()
    rms_norm(x, weight, 1e-6, backend=backend).backward(grad_out)
    grads = (None, target.grad, None) if which == "x" else (None, None, target.grad)
    check_all(grads, x, weight, 1e-6, grad_out, torch.float32, kernel_seed)
    other = weight if which == "x" else x
    assert other.grad is None


def test_non_contiguous_input_and_gradient(kernel_seed):
    x, weight, grad_out = make_inputs((6, 40), torch.float32, kernel_seed)
    x_t = x.t().contiguous().t().requires_grad_()  # same values, column-major strides
    grad_out = grad_out[:1].expand(6, 40)  # row stride 0, as a broadcast gradient arrives
    backends = ["torch", "triton"] if HAS_TRITON else ["torch"]
    for backend in backends:
        x_t.grad = None
        y = rms_norm(x_t, weight, 1e-6, backend=backend)
        y.backward(grad_out)
        check_all(
            (y.detach(), x_t.grad, None), x, weight, 1e-6, grad_out, torch.float32, kernel_seed
        )


# --- agreement with transformers' norms (what the patched model replaces) -----------------


def transformers_norm(family: str, weight, eps):
    """Llama's RMSNorm (x_normed * w) or Gemma's (x_normed * (1 + w), scaled in float32)."""
    if family == "llama":
        from transformers.models.llama.modeling_llama import LlamaRMSNorm as Norm
    else:
        from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm as Norm
    module = Norm(weight.shape[0], eps=eps).to(weight.dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
    return module


# Per family: eps, the weights' centre (Gemma stores w around 0 and scales by 1 + w) and the
# kernel's arguments that reproduce it.
FAMILIES = {
    "llama": (1e-5, 1.0, {}),
    "gemma": (1e-6, 0.0, {"offset": 1.0, "casting": "gemma"}),
}


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
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_matches_the_transformers_norm(family, backend, x_dtype, w_dtype, kernel_seed):
    eps, centre, kwargs = FAMILIES[family]
    gen = torch.Generator().manual_seed(kernel_seed)
    shape = (2, 3, 97)
    x = torch.randn(shape, generator=gen).to(x_dtype)
    weight = (centre + 0.5 * torch.randn(shape[-1], generator=gen)).to(w_dtype)
    module = transformers_norm(family, weight, eps)
    x_ref = x.clone().requires_grad_()
    y_ref = module(x_ref)
    grad_out = torch.randn(shape, generator=gen).to(y_ref.dtype)
    y_ref.backward(grad_out)

    x_ours = x.clone().requires_grad_()
    w_ours = weight.clone().requires_grad_()
    y = rms_norm(x_ours, w_ours, eps, backend=backend, **kwargs)
    y.backward(grad_out)

    assert y.dtype == y_ref.dtype
    assert x_ours.grad.dtype == x_dtype and w_ours.grad.dtype == w_dtype
    if backend == "torch":
        # The torch path runs the family's own op sequence: the forward agrees bit for bit.
        assert torch.equal(y, y_ref), f"seed {kernel_seed}"
    # Gradients (and the interpreter's bf16) agree within the dtype's tolerance.
    tol_dtype = torch.bfloat16 if torch.bfloat16 in (x_dtype, w_dtype) else x_dtype
    _, scales = reference(x, weight, eps, grad_out, offset=kwargs.get("offset", 0.0))
    theirs = (y_ref.detach(), x_ref.grad, module.weight.grad)
    for name, got, want, scale in zip(
        ("output", "grad x", "grad weight"), (y.detach(), x_ours.grad, w_ours.grad), theirs, scales
    ):
        check_close(name, got, want.double(), scale, tol_dtype, kernel_seed)


# --- dispatch and errors -------------------------------------------------------------------


def test_auto_on_cpu_is_the_torch_path(kernel_seed):
    x, weight, _ = make_inputs((4, 50), torch.bfloat16, kernel_seed)
    assert torch.equal(rms_norm(x, weight, backend="auto"), rms_norm(x, weight, backend="torch"))


def test_bad_arguments_are_refused(monkeypatch):
    x, weight = torch.randn(2, 8), torch.ones(8)
    with pytest.raises(ValueError, match="backend"):
        rms_norm(x, weight, backend="cuda")
    with pytest.raises(ValueError, match="weight of shape"):
        rms_norm(x, torch.ones(7))
    with pytest.raises(ValueError, match="casting"):
        rms_norm(x, weight, casting="t5")
    if HAS_TRITON:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            rms_norm(x, weight, backend="triton")
