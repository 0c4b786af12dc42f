"""RunCompare's logic as plain functions (no ipywidgets), tested headless.

:func:`spec_diff` finds the flattened spec params (``section.field``, as MLflow stores
them) on which runs differ, and marks the cells that differ from the first run;
:func:`align_samples` puts the completions several runs gave for the same prompt on one
row; :func:`curve_keys` picks and orders the metrics drawn as overlaid curves;
:func:`last_samples` reads the sample table of a run's last evaluation (or training step).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench import tracking
from workbench.spec.mlflow_names import LOSS_KEY, OBJECTIVE_PREFIX, TRAIN_PREFIX

# Not a difference worth a row: the columns are already labelled by run name.
IGNORED_PARAMS = ("tracking.run_name",)
CURVE_PREFIXES = (TRAIN_PREFIX, OBJECTIVE_PREFIX)
SAMPLES_FOLDER = "samples"


# -- runs ------------------------------------------------------------------------------------


def run_dict(client, run_id: str) -> dict[str, Any]:
    """One run as :func:`workbench.tracking.runs_frame` describes it (same keys)."""
    return tracking.run_record(client.get_run(run_id))


def run_labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A column label per run: its name, with the id's first 8 characters added where two
    runs share a name (or a run has none)."""
    names = [r.get("run_name") or "" for r in runs]
    return [
        name if name and names.count(name) == 1 else f"{name} ({r['run_id'][:8]})".lstrip()
        for name, r in zip(names, runs)
    ]


# -- the spec diff ---------------------------------------------------------------------------


@dataclass
class SpecDiff:
    """The params on which runs differ. ``values[i][j]`` is param ``keys[i]`` of run ``j``
    (None where that run has no such param); ``marked[i][j]`` says it differs from the first
    run's value (the first run is the baseline, like the left side of a diff)."""

    labels: list[str]
    keys: list[str] = field(default_factory=list)
    values: list[list[str | None]] = field(default_factory=list)
    marked: list[list[bool]] = field(default_factory=list)
    same: int = 0  # params every run has with one value

    def table(self) -> list[dict[str, str | None]]:
        """One dict per differing param: ``{"param": key, label: value, ...}``."""
        return [
            {"param": key, **dict(zip(self.labels, row))}
            for key, row in zip(self.keys, self.values)
        ]


def spec_diff(
    params: Sequence[Mapping[str, str]],
    labels: Sequence[str],
    ignore: Sequence[str] = IGNORED_PARAMS,
) -> SpecDiff:
    """Compare runs' flattened spec params (``section.field`` -> string, one mapping per run).

    A param is kept when its value is not the same in every run (a run lacking it counts as
    a different value); its cells are marked where they differ from the first run's. Keys
    in ``ignore`` are left out. Rows are sorted by key, so a section's fields stay together.
    """
    if len(params) != len(labels):
        raise ValueError(f"{len(params)} runs' params but {len(labels)} labels")
    diff = SpecDiff(labels=list(labels))
    for key in sorted(set().union(*params) - set(ignore)) if params else []:
        row = [p.get(key) for p in params]
        if all(v == row[0] for v in row):
            diff.same += 1
            continue
        diff.keys.append(key)
        diff.values.append(row)
        diff.marked.append([v != row[0] for v in row])
    return diff


# -- samples ---------------------------------------------------------------------------------


@dataclass
class AlignedSample:
    """One prompt and what each run made of it. ``completions[label]`` (and ``scores``, the
    per-sample metrics the run logged with it) is None where that run has no such sample."""

    prompt: str
    target: Any
    completions: dict[str, str | None]
    scores: dict[str, dict[str, float] | None]


def align_samples(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[AlignedSample]:
    """Rows of completions by prompt: ``samples`` maps a run label to its sample table (dicts
    with ``prompt``, ``completion`` and optionally ``target`` and per-sample metrics).

    The k-th occurrence of a prompt in one run is paired with the k-th in another (a prompt
    may be asked twice). Rows follow the first run's order; prompts only later runs have
    follow, in the order they first appear.
    """
    rows: dict[tuple[str, int], AlignedSample] = {}
    labels = list(samples)
    for label, table in samples.items():
        seen: dict[str, int] = {}
        for sample in table:
            prompt = str(sample.get("prompt", ""))
            key = (prompt, seen.get(prompt, 0))
            seen[prompt] = key[1] + 1
            row = rows.get(key)
            if row is None:
                row = rows[key] = AlignedSample(
                    prompt, sample.get("target"), dict.fromkeys(labels), dict.fromkeys(labels)
                )
            elif row.target is None:
                row.target = sample.get("target")
            completion = sample.get("completion", sample.get("generated"))
            row.completions[label] = None if completion is None else str(completion)
            row.scores[label] = {
                k: float(v)
                for k, v in sample.items()
                if k not in ("prompt", "target", "completion", "generated", "step")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
            }
    return list(rows.values())


def download_text(client, run_id: str, path: str) -> str | None:
    """The text of artifact ``path`` of a run; None when the run has no such artifact."""
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=client.tracking_uri
            )
            with open(local, encoding="utf-8") as f:
                return f.read()
    except Exception:  # a run without that artifact (MLflow raises its own types)
        return None


# The sample tables a run stores, by what produced them: its evaluations' completions of the
# held-out prompts, and (RL methods) the completions it sampled and trained on.
SAMPLE_TABLES = {"evaluation": "step_", "training": "train_step_"}


def last_samples(client, run_id: str, kind: str = "evaluation") -> list[dict]:
    """The rows of a run's last sample table of ``kind`` (see :data:`SAMPLE_TABLES`):
    ``samples/step_*.json`` of its last evaluation, or ``samples/train_step_*.json`` of its
    last logged training step (zero-padded so the names sort by step); [] if none."""
    prefix = f"{SAMPLES_FOLDER}/{SAMPLE_TABLES[kind]}"
    try:
        files = sorted(
            a.path
            for a in client.list_artifacts(run_id, SAMPLES_FOLDER)
            if a.path.startswith(prefix)
        )
    except Exception:  # the store cannot list them
        return []
    text = download_text(client, run_id, files[-1]) if files else None
    if not text:
        return []
    data = json.loads(text)
    if isinstance(data, dict) and "columns" in data:  # a table: {"columns": [...], "data": [[...]]}
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    return data if isinstance(data, list) else []


# -- curves ----------------------------------------------------------------------------------


def curve_keys(
    runs: Sequence[Mapping[str, Any]], prefixes: Sequence[str] = CURVE_PREFIXES
) -> list[str]:
    """The metrics drawn as overlaid curves, one figure each: every key under ``prefixes``
    that some run logged; ``train/loss`` first, then by prefix, then by name."""
    keys = {k for r in runs for k in r["metrics"] if k.startswith(tuple(prefixes))}

    def order(key: str) -> tuple[int, int, str]:
        group = next(i for i, p in enumerate(prefixes) if key.startswith(p))
        return (0 if key == LOSS_KEY else 1, group, key)

    return sorted(keys, key=order)
