"""One generation/evaluation API for every method.

Objectives are computed on held-out rows with the spec's decoding settings: metrics and
rewards of generated text (``metric:<name>``, ``reward:<name>``, see
:mod:`workbench.objectives.scoring`), the held-out loss (``metric:eval_loss``), loss terms
(``term:<name>``, measured by the method's module and supplied by the caller) and costs
(``cost:<name>``, supplied by the caller). The same function scores the base model, so a
run's trajectory in objective space starts where the base stands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from workbench.data.encode import collate, encode_rows
from workbench.data.rows import ChatRow, PreferenceRow, Row, task_of
from workbench.methods.sft.losses import sft_loss
from workbench.models.generation import generate
from workbench.objectives import scoring as objective_sources
from workbench.spec.objective_source import parse_source


@dataclass
class EvalResult:
    objectives: dict[str, float]
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)


@torch.no_grad()
def heldout_loss(
    model, tokenizer, rows: Sequence[Row | ChatRow], max_length: int, batch_size: int = 64
) -> float:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # A preference pair's held-out loss is its chosen completion's.
    rows = [r.completion_row(r.chosen) if isinstance(r, PreferenceRow) else r for r in rows]
    encoded, _ = encode_rows(tokenizer, rows, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], pad)
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        ).logits
        per_example, _ = sft_loss(logits, batch["labels"].to(device))
        total += float(per_example.sum())
        count += len(per_example)
    model.train(was_training)
    return total / max(count, 1)


def evaluate(
    model,
    tokenizer,
    rows: Sequence[Row | ChatRow | PreferenceRow],
    objectives,
    eval_spec,
    *,
    max_length: int = 64,
    costs: dict[str, float] | None = None,
    seed: int = 0,
    extra_metrics: Sequence[str] = (),
    terms: Callable[[], dict[str, float]] | None = None,
) -> EvalResult:
    """Score ``objectives`` (a list of ObjectiveSpec) on held-out ``rows``.

    ``terms()`` returns the held-out value of each loss term (asked only when a ``term:``
    objective needs it); ``costs`` the run's cost figures. Rows from two or more built-in
    tasks (a mixture's) are scored per task too (``exact_match/<task>``), which an objective
    with ``task`` set reads.
    """
    sources = {o.source for o in objectives} | {f"metric:{m}" for m in extra_metrics}
    tasks = [task_of(r) for r in rows]
    scored = sorted(s for s in sources if objective_sources.scorer(s) is not None)
    metrics: dict[str, float] = {}
    samples: list[dict] = []
    if scored:
        predictions = generate(
            model,
            tokenizer,
            rows,
            max_new_tokens=eval_spec.max_new_tokens,
            do_sample=eval_spec.do_sample,
            temperature=eval_spec.temperature,
            top_p=eval_spec.top_p,
            batch_size=eval_spec.batch_size,
            seed=seed,
        )
        examples = [objective_sources.example_of(r) for r in rows]
        per_row = {
            _metric_key(source): objective_sources.score_texts(
                objective_sources.scorer(source), predictions, examples
            )
            for source in scored
        }
        metrics.update({name: sum(v) / len(v) for name, v in per_row.items()})
        metrics.update(_per_task_means(per_row, tasks))
        for i, (p, e) in enumerate(zip(predictions, examples)):
            if i >= eval_spec.samples_logged:
                break
            prompt = e["prompt"] if isinstance(e["prompt"], str) else str(e["prompt"])
            sample = {"prompt": prompt, "target": e["answer"], "completion": p}
            sample.update({name: values[i] for name, values in per_row.items()})
            samples.append(sample)
    if "metric:eval_loss" in sources:
        metrics["eval_loss"] = heldout_loss(model, tokenizer, rows, max_length)
    for task in sorted({o.task for o in objectives if o.source == "metric:eval_loss" and o.task}):
        metrics[f"eval_loss/{task}"] = heldout_loss(
            model, tokenizer, [r for r, t in zip(rows, tasks) if t == task], max_length
        )
    if terms is not None and any(parse_source(s).kind == "term" for s in sources):
        metrics.update({_metric_key(f"term:{k}"): v for k, v in terms().items()})
    costs = costs or {}
    values: dict[str, float] = {}
    for o in objectives:
        key = _metric_key(o.source) if o.task is None else f"{_metric_key(o.source)}/{o.task}"
        # A metric is always scored; a reward or term only where it could be.
        if o.kind == "metric" or (o.kind in ("reward", "term") and key in metrics):
            values[o.name] = metrics[key]
        elif o.kind == "cost" and o.source_name in costs:
            values[o.name] = costs[o.source_name]
    values = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    return EvalResult(values, metrics, samples)


def _per_task_means(per_row: dict[str, list[float]], tasks: list[str | None]) -> dict[str, float]:
    """Each score's mean over each task's rows, as ``<key>/<task>``, when the rows come from
    two or more tasks (a mixture's held-out rows; a task's ``<objective>/<task>`` reads it)."""
    named = sorted({t for t in tasks if t is not None})
    if len(named) < 2:
        return {}
    out = {}
    for key, values in per_row.items():
        for task in named:
            mine = [v for v, t in zip(values, tasks) if t == task]
            out[f"{key}/{task}"] = sum(mine) / len(mine)
    return out


def _metric_key(source: str) -> str:
    """Name of a source's value among the evaluation metrics (``eval/<key>`` in MLflow):
    ``exact_match`` for ``metric:exact_match``, ``reward/<name>``, ``term/<name>``."""
    kind, name = parse_source(source)
    return name if kind == "metric" else f"{kind}/{name}"
