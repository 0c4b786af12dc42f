"""AdaMerging (Yang et al., 2024): merging coefficients learned without labels.

Layer-wise AdaMerging gives every source model k and every weight tensor j its own
coefficient, ``theta_j = theta_0j + sum_k lambda_kj tau_kj``, and learns the coefficients by
minimising the entropy of the merged model's predictions on unlabeled inputs (a confident
model on the target inputs is, empirically, a more accurate one), with Adam, clamping each
coefficient to [0, 1] after every step as the paper does. For a causal language model the
prediction is the next-token distribution at every attended position of the inputs.

The task vectors may be sparsified first (TIES-AdaMerging: pass vectors trimmed by
:func:`workbench.merging.tensors.sparsify`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

Weights = Mapping[str, torch.Tensor]


@dataclass
class AdaMergingResult:
    coefficients: torch.Tensor  # (sources, weight tensors), in [0, 1]
    names: list[str]  # the weight tensors, in the coefficients' column order
    entropies: list[float] = field(default_factory=list)  # the step's batch, before each step
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # the merged weights
    initial_entropy: float = float("nan")  # mean over all batches, coefficients at ``init``
    final_entropy: float = float("nan")  # mean over all batches, learned coefficients


def prediction_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the (masked) positions of the entropy -sum_v p_v log p_v of the predictions."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    if mask is None:
        return entropy.mean()
    mask = mask.to(entropy.dtype)
    return (entropy * mask).sum() / mask.sum().clamp(min=1)


def padded_batches(
    token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16
) -> list[dict]:
    """Right-padded ``input_ids`` / ``attention_mask`` batches of unlabeled token sequences."""
    batches = []
    for start in range(0, len(token_ids), batch_size):
        chunk = token_ids[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
            attention[i, : len(ids)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": attention})
    return batches


def _merged(
    base: Weights, stacked: dict[str, torch.Tensor], coefficients: torch.Tensor, names: list[str]
) -> dict[str, torch.Tensor]:
    out = {}
    for j, name in enumerate(names):
        tau = stacked[name]
        lam = coefficients[:, j].reshape((-1,) + (1,) * (tau.dim() - 1)).to(tau.dtype)
        out[name] = base[name] + (lam * tau).sum(0)
    return out


def batch_entropy(
    model, weights: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The prediction entropy of ``model`` run with ``weights`` in place of its own."""
    from torch.func import functional_call

    outputs = functional_call(
        model,
        weights,
        args=(),
        kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
    )
    return prediction_entropy(outputs.logits, batch["attention_mask"])


def adamerging(
    model,
    base: Weights,
    vectors: Sequence[Weights],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    steps: int = 20,
    lr: float = 1e-2,
    init: float = 0.3,
) -> AdaMergingResult:
    """Learn layer-wise coefficients for ``vectors`` (task vectors over ``base``) on unlabeled
    ``batches`` (:func:`padded_batches`). ``model`` holds the base's weights and is not changed;
    it is only run with the merged weights in place of its own (``torch.func``)."""
    if not batches:
        raise ValueError("AdaMerging needs unlabeled inputs (at least one batch)")
    base = {n: t.detach() for n, t in base.items()}
    names = [n for n in base if any(n in v for v in vectors)]
    stacked = {
        n: torch.stack(
            [
                (v[n] if n in v else torch.zeros_like(base[n], dtype=torch.float64)).to(
                    base[n].dtype
                )
                for v in vectors
            ]
        )
        for n in names
    }
    coefficients = torch.full((len(vectors), len(names)), float(init), requires_grad=True)
    optimizer = torch.optim.Adam([coefficients], lr=lr)
    was_training = model.training
    model.eval()
    entropies = []
    try:
        with torch.no_grad():
            start = _merged(base, stacked, coefficients, names)
            initial = float(sum(batch_entropy(model, start, b) for b in batches) / len(batches))
        for step in range(steps):
            loss = batch_entropy(
                model, _merged(base, stacked, coefficients, names), batches[step % len(batches)]
            )
            entropies.append(float(loss.detach()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                coefficients.clamp_(0.0, 1.0)
        with torch.no_grad():
            final = _merged(base, stacked, coefficients, names)
            final_entropy = float(
                sum(batch_entropy(model, final, b) for b in batches) / len(batches)
            )
    finally:
        model.train(was_training)
    lam = coefficients.detach()
    weights = {}
    for j, name in enumerate(names):
        change = (
            lam[:, j].double().reshape((-1,) + (1,) * base[name].dim()) * stacked[name].double()
        ).sum(0)
        weights[name] = (base[name].double() + change).to(base[name].dtype)
    for name in base:
        weights.setdefault(name, base[name].clone())
    return AdaMergingResult(lam, names, entropies, weights, initial, final_entropy)


def mean_entropy(model, weights: dict[str, torch.Tensor], batches) -> float:
    """The mean prediction entropy over ``batches`` with ``weights`` in place of the model's."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(sum(batch_entropy(model, weights, b) for b in batches) / len(batches))
    finally:
        model.train(was_training)
