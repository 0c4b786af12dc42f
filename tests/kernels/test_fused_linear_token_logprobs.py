"""fused_linear_token_logprobs: torch and triton (interpreter) paths against float64.

Fresh random inputs per case (seed in each failure message; WORKBENCH_TEST_SEED replays).
The backward gets an arbitrary per-token gradient, as DPO/GRPO losses send, including
non-zero values at ignored positions (which must not leak into the gradients); forward and
gradients are compared with a naive float64 log_softmax + gather, unchunked and with a
forced tiny chunk; the same with soft-capped logits and a temperature, and at vocabularies
over the triton kernel's block (4096) and of 49,152. NaN never passes; the caller's tensors
must be unchanged.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels.helpers import BACKENDS, CHUNK_ROWS, DTYPES, ONE_CHUNK, SHAPES, needs_triton
from workbench.kernels import linear_softmax
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


# --- soft-capped logits and a temperature (Gemma 2, Gemma 3 with final_logit_softcapping) -


@pytest.mark.parametrize("frozen", [False, True], ids=["head_trained", "frozen_head"])
@pytest.mark.parametrize("shape", ["prime_vocab", "batch_by_seq"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_softcap_matches_float64_reference(linear_softmax_case, backend, dtype, shape, frozen):
    """log_softmax(cap * tanh(z / cap) / T): the cap about the logits' size, so tanh bends
    them; the temperature divides the capped logits, not z."""
    lead, hidden_size, vocab, ignored = SHAPES[shape]
    case = linear_softmax_case(lead, hidden_size, vocab, dtype, True, ignored)
    for softcap, temperature in ((3.0, 1.0), (2.5, 0.7)):
        ref_out, ref_grads = case.reference(
            lambda logp, valid: logp, softcap=softcap, temperature=temperature
        )
        for chunk_rows in CHUNK_ROWS[backend]:
            hidden, weight, b = case.leaves()
            leaves = (hidden, weight, b)
            if frozen:
                weight, b = case.weight, case.bias
                leaves, ref_grads = (hidden,), ref_grads[:1]
            logprobs = fused_linear_token_logprobs(
                hidden, weight, case.targets, bias=b, backend=backend, chunk_rows=chunk_rows,
                softcap=softcap, temperature=temperature,
            )  # fmt: skip
            assert logprobs.dtype == torch.float32 and (logprobs <= 0).all()
            case.backward(logprobs)
            label = (
                f"softcap {softcap} T={temperature} {backend} {dtype} {shape} "
                f"frozen={frozen} chunk_rows={chunk_rows}"
            )
            case.check(label, logprobs.detach(), leaves, ref_out, ref_grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperature_without_softcap_matches_float64_reference(linear_softmax_case, backend):
    case = linear_softmax_case(6, 16, 331, torch.float32, True, "some")
    ref_out, ref_grads = case.reference(lambda logp, valid: logp, temperature=0.6)
    for chunk_rows in CHUNK_ROWS[backend]:
        hidden, weight, b = case.leaves()
        logprobs = fused_linear_token_logprobs(
            hidden, weight, case.targets, bias=b, backend=backend, chunk_rows=chunk_rows,
            temperature=0.6,
        )  # fmt: skip
        case.backward(logprobs)
        label = f"T=0.6 {backend} chunk_rows={chunk_rows}"
        case.check(label, logprobs.detach(), (hidden, weight, b), ref_out, ref_grads)


def test_bad_softcap_or_temperature_is_refused():
    hidden, weight, targets = torch.randn(2, 4), torch.randn(7, 4), torch.tensor([1, 2])
    for kwargs in ({"softcap": 0.0}, {"softcap": 3.0, "temperature": -1.0}, {"temperature": 0}):
        with pytest.raises(ValueError, match="positive"):
            fused_linear_token_logprobs(hidden, weight, targets, **kwargs)


# --- large vocabularies -------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("softcap", [None, 3.0], ids=["plain", "softcap"])
def test_triton_walks_vocabulary_blocks_above_4096(linear_softmax_case, softcap):
    """Above _TRITON_MAX_BLOCK (4096) columns the kernel's online softmax and its gradient
    loop run over several vocabulary blocks, the last one part-masked (5003 = 4096 + 907)."""
    assert linear_softmax._TRITON_MAX_BLOCK == 4096
    case = linear_softmax_case(3, 8, 5003, torch.float32, True, "some")
    ref_out, ref_grads = case.reference(lambda logp, valid: logp, softcap=softcap)
    for chunk_rows in (None, 2):
        hidden, weight, b = case.leaves()
        logprobs = fused_linear_token_logprobs(
            hidden, weight, case.targets, bias=b, backend="triton", chunk_rows=chunk_rows,
            softcap=softcap,
        )  # fmt: skip
        case.backward(logprobs)
        label = f"triton V=5003 softcap={softcap} chunk_rows={chunk_rows}"
        case.check(label, logprobs.detach(), (hidden, weight, b), ref_out, ref_grads)


@pytest.mark.parametrize("softcap", [None, 30.0], ids=["plain", "softcap"])
def test_torch_path_at_a_49152_vocabulary(linear_softmax_case, softcap):
    """A SmolLM2-sized vocabulary: the full-logits route (None), chunks (2) and one chunk.

    ``grad_hidden = (softmax - onehot) @ weight`` sums 49,152 float32 products whose total
    mostly cancels (the row sums to 0), so its error relative to the result is several
    times the small vocabularies' (2.2e-5 seen on the plain full-logits route): 1e-4 here.
    """
    case = linear_softmax_case(4, 8, 49152, torch.float32, False, "some")
    case.tol = 1e-4
    ref_out, ref_grads = case.reference(lambda logp, valid: logp, softcap=softcap)
    for chunk_rows in CHUNK_ROWS["torch"]:
        hidden, weight, _ = case.leaves()
        logprobs = fused_linear_token_logprobs(
            hidden, weight, case.targets, backend="torch", chunk_rows=chunk_rows, softcap=softcap
        )
        case.backward(logprobs)
        label = f"torch V=49152 softcap={softcap} chunk_rows={chunk_rows}"
        case.check(label, logprobs.detach(), (hidden, weight), ref_out, ref_grads)


@pytest.mark.parametrize("frozen_head", [True, False])
@pytest.mark.parametrize("op", ["token_logprobs", "cross_entropy"])
def test_under_cpu_autocast_it_runs_in_bfloat16_and_returns_float32_gradients(
    kernel_seed, op, frozen_head
):
    """bf16-mixed training calls the fused head under CPU autocast with float32 weights and
    some rows ignored (prompt tokens): it computes as an autocast linear would (the inputs
    cast to bfloat16), and the float32 inputs get float32 gradients. Reference: the plain
    head under the same autocast. (With a frozen head, as under LoRA, the sweep once mixed an
    autocast bfloat16 product into its float32 buffer for the kept rows, and failed.)"""
    n, h, v = 24, 16, 300
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=not frozen_head)
    targets = torch.randint(0, v, (n,))
    targets[::3] = -100

    def fused():
        if op == "token_logprobs":
            return fused_linear_token_logprobs(hidden, weight, targets, chunk_rows=8)
        return fused_linear_cross_entropy(hidden, weight, targets, reduction="none", chunk_rows=8)

    def plain():
        logprobs = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float(), -1)
        kept = targets.clamp(min=0)[:, None]
        picked = logprobs.gather(1, kept).squeeze(1) * (targets != -100)
        return picked if op == "token_logprobs" else -picked

    results = []
    for function in (fused, plain):
        hidden.grad = weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = function()
        (out * torch.linspace(0.5, 1.5, n)).sum().backward()
        d_weight = None if frozen_head else weight.grad.clone()
        results.append((out.detach(), hidden.grad.clone(), d_weight))
    (out, d_hidden, d_weight), (ref, ref_hidden, ref_weight) = results
    assert out.dtype == d_hidden.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(d_hidden, ref_hidden, rtol=3e-2, atol=3e-2)
    if not frozen_head:
        assert d_weight.dtype == torch.float32
        torch.testing.assert_close(d_weight, ref_weight, rtol=3e-2, atol=3e-2)
