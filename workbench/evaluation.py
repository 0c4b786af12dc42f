"""One generation/evaluation API for every method.

Objectives are computed on held-out rows with the spec's decoding settings: held-out metrics
from generated text (``metric:<name>``), the held-out loss (``metric:eval_loss``) and costs
(``cost:<name>``, supplied by the caller). The same function scores the base model, so a
run's trajectory in objective space starts where the base stands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from workbench.data.encode import collate, encode_rows, prompt_ids
from workbench.data.rows import ChatRow, Row
from workbench.data.tasks import METRICS
from workbench.losses import sft_loss


@dataclass
class EvalResult:
    objectives: dict[str, float]
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)


@torch.no_grad()
def generate(model, tokenizer, rows: Sequence[Row | ChatRow], *, max_new_tokens: int = 24,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             batch_size: int = 64, seed: int = 0) -> list[str]:
    """Completions for ``rows`` (left-padded batches; only the new tokens are decoded)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    outputs: list[str] = []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [prompt_ids(tokenizer, r) for r in rows[start:start + batch_size]]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, ids in enumerate(chunk):
                input_ids[i, width - len(ids):] = torch.tensor(ids)
                attention[i, width - len(ids):] = 1
            kwargs = {"do_sample": do_sample}
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=pad, **kwargs,
            )
            new = out[:, width:]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return outputs


@torch.no_grad()
def heldout_loss(model, tokenizer, rows: Sequence[Row | ChatRow], max_length: int,
                 batch_size: int = 64) -> float:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded, _ = encode_rows(tokenizer, rows, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start:start + batch_size], pad)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        per_example, _ = sft_loss(logits, batch["labels"].to(device))
        total += float(per_example.sum())
        count += len(per_example)
    model.train(was_training)
    return total / max(count, 1)


def evaluate(model, tokenizer, rows: Sequence[Row | ChatRow], objectives, eval_spec, *,
             max_length: int = 64, costs: dict[str, float] | None = None, seed: int = 0,
             extra_metrics: Sequence[str] = ()) -> EvalResult:
    """Score ``objectives`` (a list of ObjectiveSpec) on held-out ``rows``."""
    needed = {o.source.partition(":")[2] for o in objectives if o.source.startswith("metric:")}
    needed |= set(extra_metrics)
    metrics: dict[str, float] = {}
    samples: list[dict] = []
    text_metrics = sorted(needed & set(METRICS))
    if text_metrics:
        predictions = generate(model, tokenizer, rows, max_new_tokens=eval_spec.max_new_tokens,
                               do_sample=eval_spec.do_sample, temperature=eval_spec.temperature,
                               top_p=eval_spec.top_p, batch_size=eval_spec.batch_size, seed=seed)
        per_row = {name: [METRICS[name](p, r) for p, r in zip(predictions, rows)]
                   for name in text_metrics}
        metrics.update({name: sum(v) / len(v) for name, v in per_row.items()})
        for i, (p, r) in enumerate(zip(predictions, rows)):
            if i >= eval_spec.samples_logged:
                break
            prompt = r.prompt if isinstance(r, Row) else str(list(r.prompt_messages))
            sample = {"prompt": prompt, "target": r.answer, "completion": p}
            sample.update({name: per_row[name][i] for name in text_metrics})
            samples.append(sample)
    if "eval_loss" in needed:
        metrics["eval_loss"] = heldout_loss(model, tokenizer, rows, max_length)
    costs = costs or {}
    values: dict[str, float] = {}
    for o in objectives:
        kind, _, name = o.source.partition(":")
        if kind == "metric":
            values[o.name] = metrics[name]
        elif kind == "cost" and name in costs:
            values[o.name] = costs[name]
        # term:<name> objectives are logged from training (train/<term>), not here.
    values = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    return EvalResult(values, metrics, samples)
