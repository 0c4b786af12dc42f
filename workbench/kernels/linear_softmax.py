"""Shared engine of the fused linear + log-softmax ops (cross-entropy and token log-probs).

Both ops need, for each row ``i`` of ``hidden`` (N x H), the log-probability of its target
under ``softmax(hidden @ weight.T + bias)`` (V classes), and gradients of
``sum_i s_i * (-logp_i)`` for per-row weights ``s`` (``1 / n_valid`` for a mean
cross-entropy; minus the incoming gradient for token log-probs). With ``p_i`` the row's
softmax and ``D_i = p_i - onehot(target_i)`` (the gradient of ``-logp_i`` w.r.t. the row's
logits), those gradients are

    grad_hidden_i = s_i * (D_i @ weight)
    grad_weight   = D.T @ (s[:, None] * hidden)
    grad_bias     = D.T @ s

so ``s`` is folded into the small (rows x H) operands of the matmuls instead of being
applied to the large (rows x V) ``D``.

``sweep`` walks the rows in chunks whose logits fit a fixed byte budget, so the N x V
logits never exist at once; when all of them fit the budget there is one chunk. (Tiny
inputs on the torch path skip the sweep for the plain computation: ``use_full_logits``.)
Per chunk:

- torch path: ``logits = hidden_c @ weight.T (+ bias)`` into a reused buffer, an in-place
  ``log_softmax`` (ATen's row-wise kernel: a row stays in cache), a gather of the targets,
  an in-place ``exp`` and a subtraction of one at the targets give ``D``;
- triton path: the same matmul, then one kernel program per row computes the row's
  log-sum-exp with an online softmax over vocabulary blocks, the target's log-prob, and
  (second loop over the blocks) writes ``D`` over the logits, in the matmul dtype.

Then ``grad_hidden_c = (D @ weight) * s``, ``grad_weight += D.T @ (hidden_c * s)``,
``grad_bias += D.T @ s``. The matmuls run in the input dtype; the softmax, the
log-probs and the weight/bias gradient accumulators are float32. Nothing is written into
the caller's tensors. The matmuls are torch's (cuBLAS / oneDNN), not ``tl.dot``: the triton
kernel only does the row-wise softmax, so float32 results do not depend on a triton dot
precision; on GPUs they follow ``torch.backends.cuda.matmul.allow_tf32`` (off by default),
as the naive computation does.

Soft-capped logits (Gemma 2, and Gemma 3 where its config sets ``final_logit_softcapping``):
with a :class:`Softcap`, the softmax is taken over ``c = cap * tanh(z / cap) / temperature``
in place of the linear head's ``z``. ``c`` is computed in float32 from ``z``, and the chunk's
gradient becomes ``dz = D * (1 - tanh(z / cap)^2) / temperature`` (``D`` as above, w.r.t.
``c``), which takes ``D``'s place in the three matmuls. (Without a cap, a temperature divides
the logits linearly, so the ops fold it into ``hidden`` and ``bias`` before the sweep.) The
torch path computes ``c`` in a float32 buffer (one more chunk-sized buffer for float32
inputs) and keeps ``tanh(z / cap)`` in the matmul buffer for the gradient; the triton kernel
caps each block of the row as it loads it.

Ignored rows (target == ignore_index) get ``logp = 0`` and zero gradients; ``sweep``
leaves them out of the matmuls altogether (``valid_rows``), so a batch whose prompt and
padding positions are ignored costs only its answer tokens. Out-of-range targets raise a
ValueError on CPU tensors; on CUDA they are not checked (a check would synchronise), as with
``torch.nn.functional.cross_entropy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.kernels.row_log_softmax_triton import compiled_kernels, run_rows

# Bytes of float32 logits per chunk. Every chunk streams the whole weight through three
# matmuls and adds into the (V, H) weight gradient, so small chunks are slow: on 2 CPU cores
# at N=4096, H=512, V=32000, 16 MiB chunks ran clearly slower than 32-128 MiB ones, and
# 128 MiB put the peak over 15% of the naive computation's (BENCHMARKS.md). On GPUs a
# larger budget keeps the matmuls big.
CPU_CHUNK_BYTES = 64 * 2**20
CUDA_CHUNK_BYTES = 256 * 2**20
# Full float32 logits up to this size skip the sweep on the torch path (use_full_logits):
# on 2 CPU cores the sweep was ~8% slower than the plain computation at 1 MiB of logits and
# ~8% faster at 4 MiB.
_FULL_LOGITS_BYTES = 2 * 2**20
# Vocabulary block of the triton kernel (a row is walked in blocks of this many columns).
_TRITON_MAX_BLOCK = 4096


# The (hidden, weight, bias) gradients of a sweep, None where not needed.
LinearGradients = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


@dataclass(frozen=True)
class Softcap:
    """Logits ``cap * tanh(z / cap) / temperature`` in place of the head's ``z``: the final
    logit soft-capping of Gemma 2 (and Gemma 3 where its config sets one), then a sampling
    temperature, which no longer divides ``z`` linearly once ``tanh`` is in between."""

    cap: float
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (self.cap > 0 and self.temperature > 0):
            raise ValueError(
                f"softcap and temperature must be positive; got {self.cap}, {self.temperature}"
            )

    @property
    def scale(self) -> float:
        """``c = scale * tanh(z / cap)``."""
        return self.cap / self.temperature


@dataclass
class SweepResult:
    """What one sweep over the rows computed; fields not asked for are None."""

    logprobs: torch.Tensor | None  # (N,) float32, 0 at ignored rows
    lse: torch.Tensor | None  # (N,) float32 log-sum-exp of each row (triton path only)
    grads: LinearGradients | None  # None when no gradient was asked for
    dlogits: torch.Tensor | None  # (N, V) D in the matmul dtype, kept for a later backward


# ---------------------------------------------------------------------------------------
# argument handling shared by the two public ops


def autocast_inputs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Under autocast (``train.precision: bf16-mixed``), the head's inputs cast to autocast's
    dtype, as an autocast linear layer would cast them; else the inputs unchanged.

    The casts are ordinary differentiable ops, so the gradients reach float32 weights in
    float32. The fused sweep itself then runs with autocast off (:func:`autocast_off`): it
    makes its own buffers from its inputs' dtypes, and an autocast matmul inside it would
    hand back bfloat16 where it allocated float32.
    """
    device_type = hidden.device.type
    if not torch.is_autocast_enabled(device_type):
        return hidden, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return (
        hidden.to(dtype),
        weight.to(dtype),
        None if bias is None else bias.to(dtype),
    )


def autocast_off(hidden: torch.Tensor) -> torch.autocast:
    """A context in which ``hidden``'s device runs without autocast."""
    return torch.autocast(hidden.device.type, enabled=False)


def flatten_inputs(
    op: str,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the arguments of ``op`` and return ``hidden`` as (N, H) rows, targets as (N,)."""
    if hidden.dim() < 1 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op} expects hidden (..., H) and weight (V, H); "
            f"got hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)}"
        )
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"{op} expects targets shaped like hidden without its last dimension "
            f"{tuple(hidden.shape[:-1])}; got {tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"{op} expects integer targets; got {targets.dtype}")
    if not hidden.dtype.is_floating_point or hidden.dtype != weight.dtype:
        raise ValueError(
            f"{op} expects hidden and weight of the same floating dtype; "
            f"got {hidden.dtype} and {weight.dtype}"
        )
    if bias is not None and (tuple(bias.shape) != (weight.shape[0],) or bias.dtype != weight.dtype):
        raise ValueError(
            f"{op} expects bias of shape ({weight.shape[0]},) and dtype {weight.dtype}; "
            f"got {tuple(bias.shape)} {bias.dtype}"
        )
    devices = {hidden.device, weight.device, targets.device}
    if bias is not None:
        devices.add(bias.device)
    if len(devices) > 1:
        raise ValueError(f"{op} expects all tensors on one device; got {sorted(map(str, devices))}")
    # (No reshape when already flat: each view is one more autograd node on small inputs.)
    rows = hidden if hidden.dim() == 2 else hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets if targets.dim() == 1 else targets.reshape(-1)
    # Out-of-range targets raise in the sweep (CPU); on CUDA they are not checked.
    return rows, flat_targets.long()


def shaped(per_row: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``per_row`` (N,) viewed as the caller's targets ``shape`` (no view when equal)."""
    return per_row if per_row.shape == shape else per_row.view(shape)


def use_full_logits(n_rows: int, vocab: int, use_triton: bool, chunk_rows: int | None) -> bool:
    """Small inputs on the torch path go through the plain full-logits computation.

    When the whole float32 logits are this small, their temporaries cost little memory,
    and the plain computation (a couple of fused ATen ops) beats the sweep, whose few dozen
    small tensor ops cost more than the passes they save. A given ``chunk_rows`` always
    runs the sweep.
    """
    return not use_triton and chunk_rows is None and 4 * n_rows * vocab <= _FULL_LOGITS_BYTES


def full_logits_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    ignore_index: int,
    reduction: str,
    softcap: Softcap | None = None,
) -> torch.Tensor:
    """``F.cross_entropy`` of float32 full logits (soft-capped where asked), through
    autograd (small inputs only)."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap.cap) * softcap.scale
    try:
        return torch.nn.functional.cross_entropy(
            logits, targets, ignore_index=ignore_index, reduction=reduction
        )
    except (IndexError, RuntimeError):
        _check_targets(targets, targets != ignore_index, weight.shape[0])
        raise


def rows_per_chunk(n_rows: int, vocab: int, device: torch.device, chunk_rows: int | None) -> int:
    """Rows per chunk: ``chunk_rows`` if given, else as many as fit the logits byte budget."""
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be a positive integer; got {chunk_rows}")
        return max(1, min(int(chunk_rows), n_rows))
    budget = CUDA_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    rows = budget // (4 * max(vocab, 1))
    if rows >= 16:
        rows -= rows % 16  # matmul-friendly
    return max(1, min(rows, n_rows))


# ---------------------------------------------------------------------------------------
# the sweep


def sweep(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    valid: torch.Tensor,
    *,
    use_triton: bool,
    chunk_rows: int | None,
    want_logprobs: bool = True,
    row_weights: torch.Tensor | None = None,
    needs: tuple[bool, bool, bool] = (False, False, False),
    lse: torch.Tensor | None = None,
    keep_dlogits: bool = False,
    softcap: Softcap | None = None,
) -> SweepResult:
    """One pass over the rows of ``hidden`` (N, H) in chunks.

    Args:
        targets: (N,) int64 class ids; ``valid``: (N,) bool, False at ignored rows.
        want_logprobs: return the (N,) float32 target log-probs (0 at ignored rows).
        row_weights: (N,) float32 ``s``, 0 at ignored rows; with ``needs`` = which of
            (hidden, weight, bias) want gradients, return the gradients of
            ``sum_i s_i * (-logp_i)``.
        lse: (N,) float32 log-sum-exp of the rows from an earlier sweep (triton path: lets
            the kernel skip its first loop).
        keep_dlogits: when all rows fit one chunk, return D itself (one row per row that
            is not ignored, no bigger than one chunk) so that a backward needs only the two
            gradient matmuls.
        softcap: take the softmax over the capped logits (module docstring); D is then the
            gradient w.r.t. the head's own logits ``z``.
    """
    with torch.no_grad():
        # Ignored rows have log-prob 0 and zero gradients: leave them out of the matmuls
        # (prompt and padding positions are often a third or more of a fine-tuning batch).
        # The per-row vectors are compacted here; hidden's rows are gathered chunk by chunk.
        kept = valid_rows(valid)
        if kept is not None:
            targets, valid = targets[kept], valid[kept]
            row_weights = None if row_weights is None else row_weights[kept]
            lse = None if lse is None else lse[kept]
        result = _sweep(
            hidden, kept, weight, bias, targets, valid, use_triton, chunk_rows, want_logprobs,
            row_weights, needs, lse, keep_dlogits, softcap,
        )  # fmt: skip
        if kept is None:
            return result
        n_rows = hidden.shape[0]
        return SweepResult(
            logprobs=(
                None if result.logprobs is None else scatter_rows(result.logprobs, kept, n_rows)
            ),
            lse=None if result.lse is None else scatter_rows(result.lse, kept, n_rows),
            grads=result.grads,  # the hidden gradient has all rows already
            dlogits=result.dlogits,  # rows of ``valid_rows(valid)`` only
        )  # fmt: skip


def valid_rows(valid: torch.Tensor) -> torch.Tensor | None:
    """Indices of the rows that are not ignored, or None when no row is ignored.

    (Counting them synchronises with a GPU once per call, as the mean's divisor would.)
    """
    if bool(valid.all()):
        return None
    return valid.nonzero().squeeze(1)


def scatter_rows(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``values`` (one entry per index in ``rows``) placed into zeros of ``n_rows`` rows."""
    out = values.new_zeros((n_rows, *values.shape[1:]))
    return out.index_copy_(0, rows, values)


def _sweep(
    hidden: torch.Tensor,
    kept: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    valid: torch.Tensor,
    use_triton: bool,
    chunk_rows: int | None,
    want_logprobs: bool,
    row_weights: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    lse: torch.Tensor | None,
    keep_dlogits: bool,
    softcap: Softcap | None,
) -> SweepResult:
    # ``kept``: indices of the rows of ``hidden`` to sweep (None: all); every other argument
    # has one entry per swept row.
    n_rows, vocab = targets.shape[0], weight.shape[0]
    device, dtype = hidden.device, hidden.dtype
    step = rows_per_chunk(n_rows, vocab, device, chunk_rows)
    single_chunk = step >= n_rows
    grads: _Gradients | None = None
    if row_weights is not None and any(needs):
        grads = _Gradients(hidden, kept, weight, bias, needs, single_chunk)
    keep_dlogits = keep_dlogits and single_chunk and grads is None
    want_dlogits = grads is not None or keep_dlogits

    target_col = torch.where(valid, targets, 0)[:, None]  # ignored rows read column 0
    logprobs = torch.empty(n_rows, dtype=torch.float32, device=device) if want_logprobs else None
    out_lse: torch.Tensor | None = None
    if use_triton and lse is None:
        out_lse = torch.empty(n_rows, dtype=torch.float32, device=device)
    # Reused chunk buffers: the matmul output (input dtype) and, on the torch path for
    # 16-bit inputs or capped logits, a float32 one for the softmax.
    mm_buf = torch.empty((min(step, n_rows), vocab), dtype=dtype, device=device)
    f32_buf = None
    if not use_triton and (dtype != torch.float32 or softcap is not None):
        f32_buf = torch.empty((min(step, n_rows), vocab), dtype=torch.float32, device=device)
    if use_triton:
        kernels = compiled_kernels()
        block = min(kernels.next_power_of_2(max(vocab, 1)), _TRITON_MAX_BLOCK)
        target_col = target_col.contiguous()
        if not hidden.is_cuda:  # the interpreter would read out of bounds silently
            _check_targets(targets, valid, vocab)

    for start in range(0, n_rows, step):
        rows = slice(start, start + step)
        h_chunk = hidden[rows] if kept is None else hidden.index_select(0, kept[rows])
        logits = mm_buf[: h_chunk.shape[0]]
        if bias is None:
            torch.mm(h_chunk, weight.t(), out=logits)
        else:
            torch.addmm(bias, h_chunk, weight.t(), out=logits)

        if use_triton:
            row_lse = out_lse if lse is None else lse
            assert row_lse is not None  # out_lse is made above when no lse was given
            # In place: the kernel overwrites the logits with D (when asked for; the
            # gradient w.r.t. z under a softcap).
            run_rows(
                kernels, block, logits, target_col[rows], valid[rows],
                None if logprobs is None else logprobs[rows], row_lse[rows],
                read_lse=lse is not None, write_grad=want_dlogits,
                softcap=None if softcap is None else (softcap.cap, softcap.scale),
            )  # fmt: skip
        else:
            probs = logits
            if softcap is not None and f32_buf is not None:  # f32_buf: made for a softcap
                # c = scale * t with t = tanh(z / cap), in float32; the matmul buffer keeps
                # t (in its dtype) for the gradient's 1 - t^2.
                probs = f32_buf[: h_chunk.shape[0]]
                probs.copy_(logits).div_(softcap.cap).tanh_()
                if want_dlogits:
                    logits.copy_(probs)
                probs.mul_(softcap.scale)
            elif f32_buf is not None:
                probs = f32_buf[: h_chunk.shape[0]]
                probs.copy_(logits)
            if logprobs is not None:  # want_logprobs
                torch.log_softmax(probs, 1, out=probs)
                try:
                    picked = probs.gather(1, target_col[rows])
                except RuntimeError:
                    _check_targets(targets, valid, vocab)  # a clearer error if that is it
                    raise
                torch.mul(picked.squeeze(1), valid[rows], out=logprobs[rows])
                if want_dlogits:
                    probs.exp_()
            elif want_dlogits:
                torch.softmax(probs, 1, out=probs)
            if want_dlogits:
                # D = p - onehot(target); ignored rows keep p (their weight is 0).
                probs.scatter_(1, target_col[rows], -1.0, reduce="add")
                if softcap is not None:
                    # dz = D * (1 - t^2) / temperature, over t in the matmul buffer.
                    logits.square_().neg_().add_(1.0).mul_(probs)
                    if softcap.temperature != 1.0:
                        logits.div_(softcap.temperature)
                elif f32_buf is not None:
                    logits.copy_(probs)
        if grads is not None and row_weights is not None:
            grads.add(logits, rows, h_chunk, row_weights[rows])

    return SweepResult(
        logprobs=logprobs,
        lse=out_lse if out_lse is not None else lse,
        grads=None if grads is None else grads.result(),
        dlogits=mm_buf if keep_dlogits else None,
    )


class _Gradients:
    """Hidden, weight and bias gradients, added up chunk by chunk from D (module docstring).

    With one chunk the matmuls write the results directly; with more, the weight and bias
    gradients accumulate in float32 (for 16-bit inputs each chunk's weight matmul lands in
    a reused buffer first).
    """

    def __init__(
        self,
        hidden: torch.Tensor,
        kept: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        needs: tuple[bool, bool, bool],
        single_chunk: bool,
    ) -> None:
        self.need_h, self.need_w, self.need_b = needs
        self.weight, self.bias, self.single_chunk = weight, bias, single_chunk
        self.kept = kept  # rows of ``hidden`` the chunks index into (None: all)
        self.dtype = dtype = hidden.dtype
        self.low_precision = dtype != torch.float32
        device = hidden.device
        self.hidden_grad: torch.Tensor | None = None
        if self.need_h:
            # Rows left out of the sweep (ignored) get zeros.
            make = torch.empty if kept is None else torch.zeros
            self.hidden_grad = make(hidden.shape, dtype=dtype, device=device)
        self.weight_grad: torch.Tensor | None = None
        self.bias_grad: torch.Tensor | None = None
        self.weight_tmp: torch.Tensor | None = None
        self.first = True
        if not single_chunk:
            if self.need_b:
                self.bias_grad = torch.zeros(weight.shape[0], dtype=torch.float32, device=device)
            if self.need_w and self.low_precision:
                self.weight_grad = torch.zeros(weight.shape, dtype=torch.float32, device=device)
                self.weight_tmp = torch.empty(weight.shape, dtype=dtype, device=device)
            elif self.need_w:
                self.weight_grad = torch.empty(weight.shape, dtype=torch.float32, device=device)

    def add(
        self, dlogits: torch.Tensor, rows: slice, h_chunk: torch.Tensor, s: torch.Tensor
    ) -> None:
        s_col = s[:, None]
        if self.hidden_grad is not None:  # need_h
            if self.kept is None:
                torch.mm(dlogits, self.weight, out=self.hidden_grad[rows]).mul_(s_col)
            else:
                part = torch.mm(dlogits, self.weight).mul_(s_col)
                self.hidden_grad.index_copy_(0, self.kept[rows], part)
        if self.need_w:
            scaled_h = h_chunk * s_col
            if self.low_precision:
                scaled_h = scaled_h.to(self.dtype)
            if self.single_chunk:
                self.weight_grad = torch.mm(dlogits.t(), scaled_h)
            elif self.weight_grad is None:
                raise AssertionError("more than one chunk: __init__ made weight_grad")
            elif self.low_precision:
                self.weight_grad.add_(torch.mm(dlogits.t(), scaled_h, out=self.weight_tmp))
            elif self.first:
                torch.mm(dlogits.t(), scaled_h, out=self.weight_grad)
            else:
                self.weight_grad.addmm_(dlogits.t(), scaled_h)
        if self.need_b:
            part = torch.mv(dlogits.t(), s.to(self.dtype) if self.low_precision else s)
            if self.single_chunk or self.bias_grad is None:  # None: single chunk
                self.bias_grad = part
            else:
                self.bias_grad.add_(part)
        self.first = False

    def result(self) -> LinearGradients:
        grad_w = grad_b = None
        if self.need_w:
            grad_w = self.weight_grad
            grad_w = torch.zeros_like(self.weight) if grad_w is None else grad_w.to(self.dtype)
        if self.need_b and self.bias is not None:  # a bias gradient needs a bias
            grad_b = self.bias_grad
            grad_b = torch.zeros_like(self.bias) if grad_b is None else grad_b.to(self.dtype)
        return self.hidden_grad, grad_w, grad_b


def _check_targets(targets: torch.Tensor, valid: torch.Tensor, vocab: int) -> None:
    bad = valid & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(
            f"targets must be in [0, {vocab}) or equal ignore_index; "
            f"got {targets[bad][:5].tolist()}"
        )


# ---------------------------------------------------------------------------------------
# a per-row output (token log-probs, cross-entropy with reduction="none")
#
# Its incoming gradient differs per row and the weight gradient mixes the rows, so the
# forward cannot finish the gradients. It does what it can, cheapest first:
# - only hidden wants a gradient (a frozen head, as under LoRA): grad_hidden_i is linear in
#   the row's factor, so the forward keeps U = D @ weight (N x H) and backward scales it;
# - all rows fit one chunk: the forward keeps D (no bigger than one chunk) and backward does
#   the gradient matmuls;
# - otherwise backward sweeps again, recomputing each chunk's softmax (one more matmul over
#   the head than the naive computation, and no N x V memory).


def per_row_forward(
    ctx: Any,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    valid: torch.Tensor,
    use_triton: bool,
    chunk_rows: int | None,
    softcap: Softcap | None = None,
) -> torch.Tensor:
    """Target log-probs (N,) float32 of a per-row op; saves what ``per_row_backward`` needs."""
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
    frozen_head = needs == (True, False, False)
    result = sweep(
        hidden, weight, bias, targets, valid, use_triton=use_triton, chunk_rows=chunk_rows,
        row_weights=torch.ones_like(valid, dtype=torch.float32) if frozen_head else None,
        needs=needs, keep_dlogits=any(needs), softcap=softcap,
    )  # fmt: skip
    empty = hidden.new_empty(0)
    kept = result.grads[0] if frozen_head and result.grads else result.dlogits
    ctx.kept = "grad_hidden" if frozen_head else "dlogits" if kept is not None else None
    ctx.save_for_backward(
        hidden, weight, empty if bias is None else bias, targets, valid,
        empty if result.lse is None else result.lse, empty if kept is None else kept,
    )  # fmt: skip
    ctx.use_triton = use_triton
    ctx.chunk_rows = chunk_rows
    ctx.softcap = softcap
    assert result.logprobs is not None  # asked for: want_logprobs
    return result.logprobs


def per_row_backward(ctx: Any, row_weights: torch.Tensor) -> LinearGradients:
    """Gradients of ``sum_i row_weights_i * (-logp_i)``: (hidden, weight, bias), None where
    not needed."""
    hidden, weight, bias, targets, valid, lse, kept = ctx.saved_tensors
    bias = bias if bias.numel() else None
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
    if not any(needs):
        return None, None, None
    with torch.no_grad():
        if ctx.kept == "grad_hidden":
            return (kept * row_weights[:, None]).to(hidden.dtype), None, None
        if ctx.kept == "dlogits":
            # The forward's D covers the rows that are not ignored (``sweep``).
            rows = valid_rows(valid)
            h_rows = hidden
            if rows is not None:
                h_rows, row_weights = hidden[rows], row_weights[rows]
            grads = _Gradients(hidden, rows, weight, bias, needs, single_chunk=True)
            grads.add(kept, slice(None), h_rows, row_weights)
            return grads.result()
    result = sweep(
        hidden, weight, bias, targets, valid, use_triton=ctx.use_triton,
        chunk_rows=ctx.chunk_rows, want_logprobs=False, row_weights=row_weights, needs=needs,
        lse=lse if lse.numel() else None, softcap=ctx.softcap,
    )  # fmt: skip
    assert result.grads is not None  # row weights and a needed gradient were given
    return result.grads
