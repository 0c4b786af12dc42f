"""What the views print about a run, in words a reader takes in at a glance (plain functions,
no ipywidgets; tested headless).

:func:`metric_label` and :func:`metric_value` turn MLflow's metric keys and raw numbers into
labels and figures (``cost/trainable_params 3.7722e+05`` -> ``trainable parameters 377,220``);
:func:`metric_rows` orders a run's metrics so what it was trained for comes first;
:func:`run_summary` reads the method, the adapter and each objective's direction and training
weight from the run's spec params; :func:`sample_rows` lays a sample table out as prompt,
reference answer, completion and score, whatever extra columns the table has.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.spec.mlflow_names import (
    COST_PREFIX,
    EVAL_PREFIX,
    LOSS_KEY,
    LR_KEY,
    OBJECTIVE_PREFIX,
    PEAK_MEM_KEY,
    PERF_PREFIX,
    PREF_PREFIX,
    REWARD_PREFIX,
    REWARD_TOTAL_KEY,
    STEP_TIME_KEY,
    TOKENS_PER_S_KEY,
    TRAIN_PREFIX,
    TRAIN_TIME_KEY,
    TRAINABLE_PARAMS_KEY,
)
from workbench.spec.objective_source import parse_source

# Keys whose names read badly spelled out: their labels, said once here.
METRIC_LABELS = {
    LOSS_KEY: "training loss",
    LR_KEY: "learning rate",
    TRAINABLE_PARAMS_KEY: "trainable parameters",
    TOKENS_PER_S_KEY: "tokens per second",
    PEAK_MEM_KEY: "peak memory (MB)",
    STEP_TIME_KEY: "seconds per step",
    TRAIN_TIME_KEY: "training time (s)",
    REWARD_TOTAL_KEY: "total reward",
}
# Metrics that count things: printed as whole numbers with thousands separators.
COUNT_KEYS = (TRAINABLE_PARAMS_KEY,)
# The order a run's metrics are listed in: what it was trained and judged on first.
METRIC_ORDER = (
    OBJECTIVE_PREFIX,
    REWARD_PREFIX,
    LOSS_KEY,
    TRAIN_PREFIX,
    EVAL_PREFIX,
    COST_PREFIX,
    PERF_PREFIX,
    PREF_PREFIX,
)
# The metrics a run's details list (not every logged figure: no preference debugging).
DETAIL_PREFIXES = (OBJECTIVE_PREFIX, REWARD_PREFIX, LOSS_KEY, COST_PREFIX, PERF_PREFIX)
# The columns of a sample table that are not scores.
SAMPLE_TEXT_COLUMNS = ("prompt", "target", "answer", "completion", "generated", "step")


def metric_label(key: str) -> str:
    """A readable label for an MLflow metric key: ``objective/correctness`` -> ``correctness``,
    ``train/sft`` -> ``training term sft``, ``reward/correct/mean`` -> ``reward correct
    (mean)``, ``cost/trainable_params`` -> ``trainable parameters``."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    head, _, rest = key.partition("/")
    words = rest.replace("_", " ")
    if not rest:
        return key.replace("_", " ")
    if head == "objective":
        return words
    if head == "train":
        return f"training term {words}"
    if head == "reward":
        name, _, stat = rest.rpartition("/")
        return f"reward {name.replace('_', ' ')} ({stat})" if name else f"reward {words}"
    if head == "pref":
        return f"preference {words}"
    if head in ("cost", "perf"):
        return words
    return f"{head.replace('_', ' ')} {words}"


def metric_value(key: str, value: float) -> str:
    """A metric's value as a reader takes it in: counts as whole numbers with thousands
    separators (``377,220``), other figures to four significant digits, never in exponent
    form between 0.001 and 1e6."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if key in COUNT_KEYS or key.endswith(("_params", "_tokens", "/steps")):
        return f"{round(value):,}"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return text
    return f"{value:.3e}"


def _order(key: str) -> tuple[int, str]:
    for i, prefix in enumerate(METRIC_ORDER):
        if key == prefix or (prefix.endswith("/") and key.startswith(prefix)):
            return i, key
    return len(METRIC_ORDER), key


def metric_rows(
    metrics: Mapping[str, float], prefixes: Sequence[str] | None = None
) -> list[tuple[str, str, str]]:
    """``(key, label, value)`` for a run's metrics in :data:`METRIC_ORDER` (objectives first);
    with ``prefixes`` only the keys under them."""
    keys = [k for k in metrics if prefixes is None or k.startswith(tuple(prefixes))]
    return [(k, metric_label(k), metric_value(k, metrics[k])) for k in sorted(keys, key=_order)]


@dataclass
class ObjectiveLine:
    """One objective of a run as its details list it."""

    name: str
    direction: str
    source: str
    weight: float | None  # the training weight; None where the objective is measured only
    value: float | None  # its last logged value


@dataclass
class RunSummary:
    """What a run is, read from its spec params: the method and its settings (every
    ``method.*`` param), the adapter and its settings, the task and the objectives."""

    method: str
    method_settings: dict[str, str] = field(default_factory=dict)
    adapter: str = ""
    adapter_settings: dict[str, str] = field(default_factory=dict)
    task: str = ""
    objectives: list[ObjectiveLine] = field(default_factory=list)


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text in (None, "None", "") else float(text)
    except ValueError:
        return None


def run_summary(
    params: Mapping[str, str], objectives: Mapping[str, float] | None = None
) -> RunSummary:
    """The method, adapter, task and objectives (direction, source, training weight, last
    value) of a run from its flattened spec params (``method.name``, ``objectives.<name>.weight``,
    ...) and ``objectives``, its last objective values."""
    objectives = objectives or {}

    def section(name: str) -> dict[str, str]:
        prefix = name + "."
        return {
            k[len(prefix) :]: v
            for k, v in params.items()
            if k.startswith(prefix) and k != prefix + "name"
        }

    declared: dict[str, dict[str, str]] = {}
    for key, value in params.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "objectives":
            declared.setdefault(parts[1], {})[parts[2]] = value
    lines = []
    for name, fields in declared.items():
        trained = fields.get("term") not in (None, "None", "") or parse_source(
            fields.get("source", "")
        ).kind in ("term", "reward")
        lines.append(
            ObjectiveLine(
                name,
                fields.get("direction", "max"),
                fields.get("source", ""),
                _float_or_none(fields.get("weight")) if trained else None,
                objectives.get(name),
            )
        )
    return RunSummary(
        method=params.get("method.name", "?"),
        method_settings=section("method"),
        adapter=params.get("adapter.name", ""),
        adapter_settings=section("adapter"),
        task=params.get("data.source", ""),
        objectives=lines,
    )


@dataclass
class SampleRow:
    """One sample: the prompt, the reference answer (None when the task has none), what the
    model wrote, and its per-sample scores by metric name."""

    prompt: str
    reference: str | None
    completion: str
    scores: dict[str, float]


def sample_rows(samples: Sequence[Mapping[str, Any]]) -> list[SampleRow]:
    """A sample table's rows as :class:`SampleRow` (``target`` or ``answer`` is the reference;
    ``completion`` or ``generated`` what the model wrote; every other number a score)."""
    rows = []
    for sample in samples:
        reference = sample.get("target", sample.get("answer"))
        completion = sample.get("completion", sample.get("generated", ""))
        scores = {
            k: float(v)
            for k, v in sample.items()
            if k not in SAMPLE_TEXT_COLUMNS
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        rows.append(
            SampleRow(
                str(sample.get("prompt", "")),
                None if reference is None else str(reference),
                "" if completion is None else str(completion),
                scores,
            )
        )
    return rows


def score_text(scores: Mapping[str, float]) -> str:
    """``"correct 1, length 4"``: a sample's scores, each to three significant digits."""
    return ", ".join(f"{name.replace('_', ' ')} {value:.3g}" for name, value in scores.items())


def label_width(labels: Sequence[str], px_per_char: int = 8, minimum: int = 80) -> str:
    """A CSS width for widget descriptions that shows the longest of ``labels`` whole (the
    default width cuts labels longer than about ten characters), so a column of controls
    stays aligned."""
    longest = max((len(str(label)) for label in labels), default=0)
    return f"{max(minimum, longest * px_per_char + 12)}px"
