"""fused_linear_token_logprobs: torch and triton (interpreter) paths against float64.

Fresh random inputs per case (seed in each failure message; WORKBENCH_TEST_SEED replays).
The backward gets an arbitrary per-token gradient, as DPO/GRPO losses send, including
non-zero values at ignored positions (which must not leak into the gradients); forward and
gradients are compared with a naive float64 log_softmax + gather, unchunked and with a
forced tiny chunk. NaN never passes; the caller's tensors must be unchanged.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels.helpers import BACKENDS, CHUNK_ROWS, DTYPES, ONE_CHUNK, SHAPES
from workbench.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy
from workbench.kernels.fused_linear_token_logprobs import fused_linear_token_logprobs


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_float64_reference(linear_softmax_case, backend, dtype, bias, shape):
    lead, hidden_size, vocab, ignored = SHAPES[shape]
    case = linear_softmax_case(lead, hidden_size, vocab, dtype, bias, ignored)
    ref_out, ref_grads = case.reference(lambda logp, valid: logp)
    for chunk_rows in CHUNK_ROWS[backend]:
        hidden, weight, b = case.leaves()
        logprobs = fused_linear_token_logprobs(
            hidden, weight, case.targets, bias=b, backend=backend, chunk_rows=chunk_rows
        )
        assert logprobs.dtype == torch.float32 and logprobs.shape == case.targets.shape
        assert (logprobs <= 0).all()
        case.backward(logprobs)
        label = f"{backend} {dtype} bias={bias} {shape} chunk_rows={chunk_rows}"
        case.check(label, logprobs.detach(), (hidden, weight, b), ref_out, ref_grads)


@pytest.mark.parametrize("chunk_rows", [None, 2, ONE_CHUNK])
@pytest.mark.parametrize("backend", BACKENDS)
def test_agrees_with_cross_entropy_none(kernel_seed, backend, chunk_rows):
    """logprobs == -CE(reduction="none"), gradients included, for the same incoming gradient."""
    gen = torch.Generator().manual_seed(kernel_seed)
    hidden = torch.randn(5, 8, generator=gen)
    weight = torch.randn(41, 8, generator=gen)
    targets = torch.tensor([3, -100, 40, 0, 17])
    grad = torch.randn(5, generator=gen)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logprobs = fused_linear_token_logprobs(h1, w1, targets, backend=backend, chunk_rows=chunk_rows)
    logprobs.backward(grad)
    losses = fused_linear_cross_entropy(
        h2, w2, targets, reduction="none", backend=backend, chunk_rows=chunk_rows
    )
    losses.backward(-grad)
    for a, b in ((logprobs, -losses), (h1.grad, h2.grad), (w1.grad, w2.grad)):
        error = (a - b).abs().max() / a.abs().max()
        assert error <= 1e-6, f"seed {kernel_seed}: relative difference {error:.2e}"


@pytest.mark.parametrize("chunk_rows", [None, 1, ONE_CHUNK])
def test_backward_may_run_again_with_retain_graph(kernel_seed, chunk_rows):
    """Per-token gradients are recomputed in backward, so a retained graph stays correct."""
    gen = torch.Generator().manual_seed(kernel_seed)
    hidden = torch.randn(3, 6, generator=gen, requires_grad=True)
    weight = torch.randn(23, 6, generator=gen)
    targets = torch.tensor([1, 2, 22])
    logprobs = fused_linear_token_logprobs(hidden, weight, targets, chunk_rows=chunk_rows)
    grad = torch.randn(3, generator=gen)
    logprobs.backward(grad, retain_graph=True)
    first = hidden.grad.clone()
    logprobs.backward(grad)
    error = (hidden.grad - 2 * first).abs().max() / first.abs().max()
    assert error <= 1e-6, f"seed {kernel_seed}: relative difference {error:.2e}"


@pytest.mark.parametrize("chunk_rows", [None, 1, ONE_CHUNK])
def test_no_grad_forward(chunk_rows):
    weight = torch.randn(29, 8, requires_grad=True)
    with torch.no_grad():
        logprobs = fused_linear_token_logprobs(
            torch.randn(4, 8), weight, torch.arange(4), chunk_rows=chunk_rows
        )
    assert not logprobs.requires_grad and torch.isfinite(logprobs).all()


@pytest.mark.parametrize("chunk_rows", [None, 2, ONE_CHUNK])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_head(linear_softmax_case, backend, dtype, chunk_rows):
    """Only hidden wants a gradient (LoRA-style frozen lm_head): the forward keeps
    D @ weight and backward scales it per row; it must match the reference all the same."""
    case = linear_softmax_case(6, 16, 331, dtype, True, "some")
    ref_out, ref_grads = case.reference(lambda logp, valid: logp)
    hidden = case.hidden.clone().requires_grad_()
    logprobs = fused_linear_token_logprobs(
        hidden, case.weight, case.targets, bias=case.bias, backend=backend, chunk_rows=chunk_rows
    )
    case.backward(logprobs)
    label = f"frozen head {backend} {dtype} chunk_rows={chunk_rows}"
    case.check(label, logprobs.detach(), (hidden,), ref_out, ref_grads[:1])
