"""Per-token log-probs of a linear head, ``log_softmax(hidden @ weight.T + bias)[target]``, chunked.

Optionally at a sampling temperature, and over soft-capped logits
``softcap * tanh(z / softcap)`` (Gemma 2's final logits, and Gemma 3's where its config sets
``final_logit_softcapping``), the temperature dividing the capped logits.

What DPO-family and GRPO-family losses consume: one log-prob per token, each with its own
gradient weight. The forward walks the rows in chunks whose float32 logits fit a fixed
byte budget (the N x V logits never exist at once) and keeps only the targets' log-probs
(and, on the triton path, each row's log-sum-exp). Because the weight gradient mixes the
rows' incoming gradients, backward recomputes the chunks' softmax with those per-row
factors: one more matmul over the head than the naive computation, none of its N x V
temporaries. Two cases skip the recompute (``linear_softmax.per_row_forward``): a frozen
head (only ``hidden`` wants a gradient, as under LoRA: the forward keeps ``D @ weight``,
N x H) and inputs whose logits fit one chunk (the forward keeps the chunk's gradient).
Tiny inputs on the torch path take the plain full-logits route, which is faster there.

Three paths (docs/concepts.md, "Fused kernels"), shared with ``fused_linear_cross_entropy`` in
``linear_softmax``: ``"torch"`` (chunked, what CPUs run), ``"triton"`` (an online-softmax
kernel over vocabulary blocks per chunk; CUDA, or CPU under ``TRITON_INTERPRET=1``) and
``"auto"`` (triton on CUDA tensors, torch elsewhere).
"""

from __future__ import annotations

from typing import Any

import torch

from workbench.kernels import dispatch
from workbench.kernels import linear_softmax as engine


def fused_linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    backend: str = "auto",
    chunk_rows: int | None = None,
    softcap: float | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probability of each target under ``softmax(hidden @ weight.T (+ bias))``, or with
    ``softcap`` and ``temperature`` under ``softmax(softcap * tanh(z / softcap) / temperature)``
    of those logits ``z``.

    Args:
        hidden: ``(..., H)`` activations (float32, bfloat16 or float16); leading dimensions
            are flattened into rows.
        weight: ``(V, H)`` head weight, same dtype as ``hidden``.
        targets: integer token ids shaped like ``hidden`` without its last dimension; each
            in ``[0, V)`` or equal to ``ignore_index``.
        bias: optional ``(V,)`` head bias.
        ignore_index: target value whose positions get log-prob 0 and no gradient.
        backend: ``"auto"`` (triton on CUDA tensors, torch elsewhere), ``"triton"`` or
            ``"torch"``.
        chunk_rows: rows per chunk; by default as many as keep a chunk's float32 logits
            within a fixed budget (all rows when the whole logits fit).
        softcap: the final-logit soft cap (None: none).
        temperature: divides the (capped) logits. Without a cap it is folded into
            ``hidden`` and ``bias`` (the head is linear), so the V-wide logits are never
            divided; with one it is applied to the capped logits inside the sweep.

    Returns:
        float32 log-probs shaped like ``targets`` (0 at ignored positions), differentiable
        in ``hidden``, ``weight`` and ``bias`` for any incoming per-token gradient;
        gradients come back in the inputs' dtypes.
    """
    hidden, weight, bias = engine.autocast_inputs(hidden, weight, bias)
    rows, flat_targets = engine.flatten_inputs(
        "fused_linear_token_logprobs", hidden, weight, targets, bias
    )
    cap = None if softcap is None else engine.Softcap(float(softcap), float(temperature))
    if cap is None and temperature != 1.0:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive; got {temperature}")
        # softmax(z / T): a linear head's z / T is (hidden / T) @ weight.T + bias / T.
        rows = rows / temperature
        bias = None if bias is None else bias / temperature
    use_triton = dispatch.use_triton(backend, hidden)
    if engine.use_full_logits(rows.shape[0], weight.shape[0], use_triton, chunk_rows):
        nll = engine.full_logits_cross_entropy(
            rows, weight, bias, flat_targets, ignore_index, "none", cap
        )
        return engine.shaped(nll.neg(), targets.shape)
    # (torch declares Function.apply without types.)
    with engine.autocast_off(rows):
        logprobs = _FusedLinearTokenLogprobs.apply(  # type: ignore[no-untyped-call]
            rows, weight, bias, flat_targets, ignore_index, use_triton, chunk_rows, cap
        )
    return engine.shaped(logprobs, targets.shape)


class _FusedLinearTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        ignore_index: int,
        use_triton: bool,
        chunk_rows: int | None,
        softcap: engine.Softcap | None,
    ) -> torch.Tensor:
        valid = targets != ignore_index
        return engine.per_row_forward(
            ctx, hidden, weight, bias, targets, valid, use_triton, chunk_rows, softcap
        )

    @staticmethod
    def backward(ctx: Any, grad_logprobs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        valid = ctx.saved_tensors[4]
        # d(sum_i g_i * logp_i) = d(sum_i (-g_i) * (-logp_i)): row weights -g.
        row_weights = torch.where(valid, -grad_logprobs.float(), 0.0)
        return (*engine.per_row_backward(ctx, row_weights), None, None, None, None, None)
