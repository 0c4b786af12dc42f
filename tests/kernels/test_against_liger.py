"""fused_linear_cross_entropy's semantics against a peer: Liger-Kernel's fused linear CE.

Liger's Triton kernels run on CPU tensors under the interpreter (tests/kernels/conftest.py
turns it on). Both Liger and our op are checked against the same float64 reference with
the same float32 tolerance (our op in test_fused_linear_cross_entropy.py), so they agree
with each other: a mean over the rows that are not ``ignore_index``, and the same
gradients for hidden, weight and bias. Liger-Kernel is a test dependency (``.[dev]``).
"""

from __future__ import annotations

import pytest
import torch
from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

from tests.kernels.helpers import SHAPES, reduce_like
from workbench.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy


@pytest.mark.parametrize("shape", ["one_row", "prime_vocab", "all_ignored", "batch_by_seq"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_liger_and_ours_match_the_same_reference(linear_softmax_case, bias, shape):
    lead, hidden_size, vocab, ignored = SHAPES[shape]
    case = linear_softmax_case(lead, hidden_size, vocab, torch.float32, bias, ignored)
    ref_out, ref_grads = case.reference(reduce_like("mean"))

    hidden, weight, b = case.leaves()
    loss = LigerFusedLinearCrossEntropyLoss()(
        weight, hidden.reshape(-1, hidden_size), case.targets.reshape(-1), b
    )
    case.backward(loss)
    case.check(f"liger {shape} bias={bias}", loss, (hidden, weight, b), ref_out, ref_grads)

    for backend in ("torch", "triton"):
        hidden, weight, b = case.leaves()
        ours = fused_linear_cross_entropy(hidden, weight, case.targets, bias=b, backend=backend)
        case.backward(ours)
        case.check(
            f"ours {backend} {shape} bias={bias}", ours, (hidden, weight, b), ref_out, ref_grads
        )
