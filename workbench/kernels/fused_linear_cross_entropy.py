"""Cross-entropy of a linear head, ``CE(hidden @ weight.T + bias, targets)``, without the
N x V logits.

The loss of row ``i`` is ``lse_i - logit_i[target_i]`` (``lse`` the log-sum-exp of the
row's logits); rows whose target is ``ignore_index`` contribute 0 and are left out of the
mean (a mean over zero valid rows is 0, not NaN).

Three paths (docs/concepts.md, "Fused kernels"), all in ``linear_softmax``:

- ``"torch"``: row chunks whose float32 logits fit a fixed byte budget (one chunk when
  the whole logits fit), so the memory stays bounded whatever N is (what CPUs run); tiny
  inputs (a few MiB of logits) take the plain ``F.cross_entropy`` route, which is faster
  there (``linear_softmax.use_full_logits``);
- ``"triton"``: the same chunks and matmuls, with one Triton kernel per chunk computing
  each row's log-sum-exp by an online softmax over vocabulary blocks, the target's
  log-prob and the logits gradient in place (CUDA; CPU under ``TRITON_INTERPRET=1``);
- ``"auto"``: triton on CUDA tensors, torch elsewhere.

Gradients. For ``"mean"`` and ``"sum"`` the gradient w.r.t. the logits is known in the
forward (``(softmax - onehot) / n_valid``), so the forward computes the gradients of
hidden, weight and bias chunk by chunk while the chunk's logits are at hand, and backward
only scales them by the incoming scalar. For ``"none"`` each row's loss has its own
incoming gradient, which the weight gradient mixes across rows, so the forward cannot
finish the gradients: see ``linear_softmax.per_row_forward`` (a frozen head or a single
chunk avoid it; otherwise backward recomputes the chunks' softmax, one more matmul over
the head than ``"mean"``). The loss is returned in float32.
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.kernels import dispatch
from workbench.kernels import linear_softmax as engine

REDUCTIONS = ("mean", "sum", "none")


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets``, chunked over rows.

    Args:
        hidden: ``(..., H)`` activations (float32, bfloat16 or float16); leading dimensions
            are flattened into N rows.
        weight: ``(V, H)`` head weight, same dtype as ``hidden``.
        targets: integer class ids shaped like ``hidden`` without its last dimension; each
            in ``[0, V)`` or equal to ``ignore_index``.
        ignore_index: target value whose rows are left out (loss 0, no gradient).
        reduction: ``"mean"`` over the rows that are not ignored (0 when there are none),
            ``"sum"``, or ``"none"`` (one loss per row, 0 at ignored rows).
        bias: optional ``(V,)`` head bias.
        backend: ``"auto"`` (triton on CUDA tensors, torch elsewhere), ``"triton"`` or
            ``"torch"``.
        chunk_rows: rows per chunk; by default as many as keep a chunk's float32 logits
            within a fixed budget (all rows when the whole logits fit).

    Returns:
        A float32 scalar, or for ``"none"`` a float32 tensor shaped like ``targets``.
        Differentiable in ``hidden``, ``weight`` and ``bias``; gradients come back in their
        dtypes (accumulated in float32). Backward may run once per forward.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    hidden, weight, bias = engine.autocast_inputs(hidden, weight, bias)
    rows, flat_targets = engine.flatten_inputs(
        "fused_linear_cross_entropy", hidden, weight, targets, bias
    )
    use_triton = dispatch.use_triton(backend, hidden)
    if engine.use_full_logits(rows.shape[0], weight.shape[0], use_triton, chunk_rows):
        # A mean over no valid rows is 0 (F.cross_entropy gives NaN): the sum over none is
        # 0, with zero gradients.
        if reduction == "mean" and not bool((flat_targets != ignore_index).any()):
            reduction = "sum"
        loss = engine.full_logits_cross_entropy(
            rows, weight, bias, flat_targets, ignore_index, reduction
        )
        return engine.shaped(loss, targets.shape) if reduction == "none" else loss
    # (torch declares Function.apply without types.)
    with engine.autocast_off(rows):
        loss = _FusedLinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
            rows, weight, bias, flat_targets, ignore_index, reduction, use_triton, chunk_rows
        )
    return engine.shaped(loss, targets.shape) if reduction == "none" else loss


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        ignore_index: int,
        reduction: str,
        use_triton: bool,
        chunk_rows: int | None,
    ) -> torch.Tensor:
        needs = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            bias is not None and ctx.needs_input_grad[2],
        )
        ctx.reduction = reduction
        valid = targets != ignore_index
        if reduction == "none":
            return -engine.per_row_forward(
                ctx, hidden, weight, bias, targets, valid, use_triton, chunk_rows
            )
        # loss = sum_i s_i * (-logp_i): s_i = 1 per valid row, divided by their count for
        # the mean (clamped: no valid rows give 0, not NaN).
        row_weights = valid.to(torch.float32)
        if reduction == "mean":
            row_weights = row_weights / valid.sum().clamp(min=1)
        result = engine.sweep(
            hidden, weight, bias, targets, valid, use_triton=use_triton, chunk_rows=chunk_rows,
            row_weights=row_weights, needs=needs,
        )  # fmt: skip
        ctx.grads = result.grads or (None, None, None)
        assert result.logprobs is not None  # a sweep returns log-probs unless told not to
        return -torch.dot(result.logprobs, row_weights)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.reduction == "none":
            valid = ctx.saved_tensors[4]
            grads: tuple[torch.Tensor | None, ...] = engine.per_row_backward(
                ctx, torch.where(valid, grad_loss.float(), 0.0)
            )
        else:
            if ctx.grads is None:
                raise RuntimeError(
                    "fused_linear_cross_entropy: backward ran twice through the same forward; "
                    "its gradients were computed in the forward and handed over once"
                )
            # Our own tensors, made in the forward and referenced nowhere else: scaling
            # them in place saves a copy of the (V, H) weight gradient.
            grads = tuple(None if g is None else g.mul_(grad_loss) for g in ctx.grads)
            ctx.grads = None
        return (*grads, None, None, None, None, None)
