"""fused_linear_cross_entropy: torch and triton (interpreter) paths against float64.

Every case draws fresh random inputs (the seed is in each failure message; set
WORKBENCH_TEST_SEED to replay), runs forward and backward once unchunked and once with a
forced tiny chunk, and compares the loss and the hidden/weight/bias gradients with a naive
float64 computation (full logits, log_softmax, gather), within a dtype's tolerance. NaN
never passes, and the caller's tensors must be unchanged afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.kernels.helpers import BACKENDS, CHUNK_ROWS, DTYPES, ONE_CHUNK, SHAPES, reduce_like
from workbench.kernels import linear_softmax as engine
from workbench.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_float64_reference(linear_softmax_case, backend, dtype, reduction, bias, shape):
    lead, hidden_size, vocab, ignored = SHAPES[shape]
    case = linear_softmax_case(lead, hidden_size, vocab, dtype, bias, ignored)
    ref_out, ref_grads = case.reference(reduce_like(reduction))
    for chunk_rows in CHUNK_ROWS[backend]:
        hidden, weight, b = case.leaves()
        loss = fused_linear_cross_entropy(
            hidden, weight, case.targets, reduction=reduction, bias=b, backend=backend,
            chunk_rows=chunk_rows,
        )  # fmt: skip
        assert loss.dtype == torch.float32
        case.backward(loss)
        label = f"{backend} {dtype} {reduction} bias={bias} {shape} chunk_rows={chunk_rows}"
        case.check(label, loss.detach(), (hidden, weight, b), ref_out, ref_grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_equals_unchunked(kernel_seed, backend):
    gen = torch.Generator().manual_seed(kernel_seed)
    hidden = torch.randn(7, 12, generator=gen)
    weight = torch.randn(97, 12, generator=gen)
    targets = torch.randint(0, 97, (7,), generator=gen)
    targets[3] = -100
    results = []
    for chunk_rows in (ONE_CHUNK, None, 1, 3):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = fused_linear_cross_entropy(h, w, targets, backend=backend, chunk_rows=chunk_rows)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    # Chunks only change the order of float32 sums: equal up to rounding, relative to the
    # size of each tensor.
    for other in results[1:]:
        for a, b in zip(results[0], other):
            error = (a - b).abs().max() / a.abs().max()
            assert error <= 1e-5, f"seed {kernel_seed}: relative difference {error:.2e}"


@pytest.mark.parametrize("chunk_rows", [None, 1, ONE_CHUNK])
def test_all_ignored_mean_is_zero_not_nan(chunk_rows):
    hidden = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(11, 4, requires_grad=True)
    targets = torch.full((3,), -100)
    loss = fused_linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    loss.backward()
    assert loss.item() == 0.0
    assert (hidden.grad == 0).all() and (weight.grad == 0).all()


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_ignore_index_inside_the_vocabulary(kernel_seed, chunk_rows):
    """A pad id used as ignore_index is a valid class id: those rows must still be left out."""
    gen = torch.Generator().manual_seed(kernel_seed)
    hidden = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(13, 6, generator=gen, dtype=torch.float64)
    targets = torch.tensor([0, 3, 0, 7, 12])
    loss = fused_linear_cross_entropy(
        hidden.float(), weight.float(), targets, ignore_index=0, chunk_rows=chunk_rows
    )
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, ignore_index=0)
    assert abs(loss.item() - expected.item()) <= 1e-5 * abs(expected.item())


@pytest.mark.parametrize("chunk_rows", [None, 2, ONE_CHUNK])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_only_the_gradients_asked_for(chunk_rows, reduction):
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(19, 8)  # a frozen head
    bias = torch.randn(19)
    targets = torch.randint(0, 19, (4,))
    loss = fused_linear_cross_entropy(
        hidden, weight, targets, reduction=reduction, bias=bias, chunk_rows=chunk_rows
    )
    loss.sum().backward()
    assert hidden.grad is not None and weight.grad is None and bias.grad is None
    with torch.no_grad():
        loss = fused_linear_cross_entropy(hidden, weight, targets, bias=bias, chunk_rows=chunk_rows)
    assert not loss.requires_grad


def test_backward_twice_is_refused_not_wrong():
    hidden = torch.randn(2, 4, requires_grad=True)
    weight = torch.randn(5, 4, requires_grad=True)
    loss = fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 2]), chunk_rows=ONE_CHUNK)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_bad_arguments_are_named(chunk_rows):
    hidden, weight = torch.randn(2, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 5]), chunk_rows=chunk_rows)
    with pytest.raises(ValueError, match="reduction"):
        fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="backend"):
        fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 2]), backend="cuda")
    with pytest.raises(ValueError, match="targets"):
        fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="dtype"):
        fused_linear_cross_entropy(hidden, weight.double(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="chunk_rows"):
        fused_linear_cross_entropy(hidden, weight, torch.tensor([1, 2]), chunk_rows=0)


def test_chunk_size_follows_the_byte_budget():
    cpu = torch.device("cpu")
    rows = engine.rows_per_chunk(4096, 32000, cpu, None)
    assert 1 <= rows < 4096 and rows * 32000 * 4 <= engine.CPU_CHUNK_BYTES
    assert engine.rows_per_chunk(256, 1000, cpu, None) == 256  # small: one chunk
    assert engine.rows_per_chunk(10, 10**9, cpu, None) == 1
    assert engine.rows_per_chunk(10, 97, cpu, 3) == 3
    # Small inputs skip the sweep on the torch path, never on the triton path.
    assert engine.use_full_logits(256, 1000, use_triton=False, chunk_rows=None)
    assert not engine.use_full_logits(256, 1000, use_triton=True, chunk_rows=None)
    assert not engine.use_full_logits(256, 1000, use_triton=False, chunk_rows=8)
    assert not engine.use_full_logits(4096, 32000, use_triton=False, chunk_rows=None)


def test_auto_runs_torch_on_cpu_and_imports_without_triton():
    """With triton unimportable, the module imports and "auto" works on CPU tensors."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from workbench.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy\n"
        "h = torch.randn(3, 4, requires_grad=True)\n"
        "loss = fused_linear_cross_entropy(h, torch.randn(7, 4), torch.tensor([0, 1, 6]))\n"
        "loss.backward()\n"
        "assert torch.isfinite(h.grad).all()\n"
        "assert 'triton' not in sys.modules or sys.modules['triton'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
