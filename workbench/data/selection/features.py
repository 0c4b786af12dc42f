"""What selectors read off a model for each candidate row: its mean hidden state (an
embedding), how plausible it finds the row's completion, how one gradient step on the row
would move the weights, and a briefly trained copy of the model (a proxy).

Every row is scored as a supervised row (a preference pair by its chosen completion, as
:meth:`~workbench.data.rows.PreferenceRow.as_row` gives it), encoded as training encodes it
(:func:`workbench.data.encode.encode_row`), on the model's own device. The model is left as
it was found: same weights, same train/eval mode, no ``.grad`` written.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from workbench.data.encode import IGNORE_INDEX, Encoded, collate, encode_row
from workbench.data.rows import PreferenceRow


def scored_row(row):
    """The supervised row a candidate is scored as (a pair: its chosen completion)."""
    return row.as_row() if isinstance(row, PreferenceRow) else row


def encode_candidates(tokenizer, rows: Sequence, max_length: int) -> list[Encoded]:
    """Each candidate encoded as training encodes it (a row with no completion token left
    after truncation is kept: its completion statistics are 0)."""
    return [encode_row(tokenizer, scored_row(row), max_length) for row in rows]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def batches(
    encoded: Sequence[Encoded], pad: int, batch_size: int, device
) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches of ``encoded`` (in order), collated and on ``device``."""
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad)
        yield {k: v.to(device) for k, v in batch.items()}


@contextlib.contextmanager
def evaluating(model) -> Iterator[None]:
    """``model`` in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_hidden_states(model, tokenizer, rows: Sequence, max_length: int, batch_size: int = 32):
    """One embedding per row: the last layer's hidden states averaged over the row's tokens
    (prompt and completion), as float32 on the CPU, shape ``(rows, hidden)``."""
    encoded = encode_candidates(tokenizer, rows, max_length)
    out = []
    with evaluating(model):
        for batch in batches(encoded, pad_id(tokenizer), batch_size, device_of(model)):
            states = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            ).hidden_states[-1]
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            out.append(((states * mask).sum(1) / mask.sum(1)).float().cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class CompletionStats:
    """Per row, averaged over its completion tokens: ``target_logprob``, the log-probability
    of the row's own token; ``top_logprob``, that of the token the model ranks first."""

    target_logprob: torch.Tensor
    top_logprob: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The row's mean token loss (negative log-likelihood of its completion)."""
        return -self.target_logprob


def token_logprobs(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per completion position: the target token's log-prob, the top token's log-prob, and
    the mask of completion positions (label t is scored by the logits at t - 1)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    target = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return target, logprobs.max(-1).values, mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` per row (0 for a row with nothing masked in)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@torch.no_grad()
def completion_stats(
    model, tokenizer, rows: Sequence, max_length: int, batch_size: int = 32
) -> CompletionStats:
    """How plausible ``model`` finds each row's completion (:class:`CompletionStats`)."""
    encoded = encode_candidates(tokenizer, rows, max_length)
    target_means, top_means = [], []
    with evaluating(model):
        for batch in batches(encoded, pad_id(tokenizer), batch_size, device_of(model)):
            target, top, mask = token_logprobs(model, batch)
            target_means.append(masked_mean(target, mask).cpu())
            top_means.append(masked_mean(top, mask).cpu())
    return CompletionStats(torch.cat(target_means), torch.cat(top_means))


@dataclass(frozen=True)
class StepStats:
    """How one plain gradient step on each row alone would move the weights ``W`` (all that
    require a gradient), per row: ``weight_dot_grad`` (W . g) and ``grad_norm`` (|g|), with
    ``weight_norm`` (|W|) the same for every row. A step of size lr moves W to W - lr g."""

    weight_dot_grad: torch.Tensor
    grad_norm: torch.Tensor
    weight_norm: float

    def norm_change(self, lr: float) -> torch.Tensor:
        """|W - lr g| - |W| per row: how much the step grows (> 0) or shrinks the weights."""
        squared = self.weight_norm**2 - 2 * lr * self.weight_dot_grad + (lr * self.grad_norm) ** 2
        return squared.clamp(min=0).sqrt() - self.weight_norm


def step_stats(model, tokenizer, rows: Sequence, max_length: int) -> StepStats:
    """:class:`StepStats` of each row, one backward pass per row (through
    ``torch.autograd.grad``, so no ``.grad`` is written), in float64 sums."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter that requires a gradient")
    weight_norm = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in params)))
    encoded = encode_candidates(tokenizer, rows, max_length)
    dots, norms = [], []
    with evaluating(model):
        for batch in batches(encoded, pad_id(tokenizer), 1, device_of(model)):
            target, _, mask = token_logprobs(model, batch)
            loss = -masked_mean(target, mask).sum()
            if not mask.any():
                dots.append(0.0)
                norms.append(0.0)
                continue
            grads = torch.autograd.grad(loss, params)
            dots.append(
                float(sum((p.detach().double() * g.double()).sum() for p, g in zip(params, grads)))
            )
            norms.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))
    return StepStats(
        torch.tensor(dots, dtype=torch.float64),
        torch.tensor(norms, dtype=torch.float64),
        weight_norm,
    )


def train_proxy(
    model,
    tokenizer,
    rows: Sequence,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    max_length: int,
    seed: int,
    next_batch: Callable[[object, torch.Generator], list[int]] | None = None,
    after_step: Callable[[object, int], None] | None = None,
):
    """A copy of ``model`` trained ``steps`` AdamW steps on ``rows`` (the completion loss,
    ``batch_size`` rows a step drawn by a generator seeded with ``seed``); the model itself
    is untouched.

    ``next_batch(proxy, generator)`` may choose the rows of each step instead (an online
    selector, which scores rows with the proxy as it trains); ``after_step(proxy, step)``
    is called after each step (counted from 1), e.g. to record the proxy's losses.
    Returns the proxy, in eval mode.
    """
    proxy = copy.deepcopy(model)
    proxy.train()
    params = [p for p in proxy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    encoded = encode_candidates(tokenizer, rows, max_length)
    generator = torch.Generator().manual_seed(seed)
    pad, device = pad_id(tokenizer), device_of(proxy)
    for step in range(1, steps + 1):
        if next_batch is None:
            chosen = torch.randperm(len(rows), generator=generator)[:batch_size].tolist()
        else:
            chosen = next_batch(proxy, generator)
        batch = next(batches([encoded[i] for i in chosen], pad, len(chosen), device))
        target, _, mask = token_logprobs(proxy, batch)
        loss = -masked_mean(target, mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(proxy, step)
    proxy.eval()
    return proxy
