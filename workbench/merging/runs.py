"""Merge finished runs' models and record each merged model as a point on the front.

:func:`merge_runs` loads the runs' models (their MLflow artifact ``model/``: full weights, or a
LoRA adapter over the spec's base, taken as its delta ``scale * B @ A``), merges their task
vectors with a method of :mod:`workbench.merging`, evaluates the merged model against the
runs' objectives with :func:`workbench.running.pipeline.evaluate_model`, and records it as its
own run: tag ``workbench.kind=evaluation``, tags ``workbench.merge`` (the method) and
``workbench.merge.sources`` (the run ids), params ``merge.*`` (method, weights and the
settings the method uses) and the merged weights as ``model/``. ``workbench front`` then shows
it beside the trained runs.

:func:`merge_grid` interpolates between two runs (rewarded-soup style): one merged run per
coefficient ``c`` (weights ``(1 - c, c)``), children of one parent run (tag
``workbench.kind=sweep``, so the front groups them) that records their front like a weight
sweep's parent: ``sweep/hypervolume``, ``sweep/base_hypervolume``, ``sweep/front_size``,
``front.json``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench import tracking
from workbench.fronts import finished_runs as fronts
from workbench.fronts.pareto import ParetoFront
from workbench.merging.catalog import METHODS, MergeSettings, check_settings
from workbench.running.library_output import no_download_bars, quiet_libraries
from workbench.spec.errors import SpecError, TrackingError, WorkbenchError
from workbench.spec.mlflow_names import KIND_SWEEP, TAG_KIND, TAG_MERGE, TAG_MERGE_SOURCES
from workbench.spec.run_spec import RunSpec

# AdaMerging learns on at most this many unlabeled training prompts.
ADAMERGING_PROMPTS = 64


@dataclass
class MergeResult:
    run_id: str
    objectives: dict[str, float]
    settings: MergeSettings
    sources: list[str]
    coefficient: float | None = None  # the interpolation coefficient of a grid point
    learned: dict[str, float] = field(default_factory=dict)  # AdaMerging's entropies


@dataclass
class MergeGridResult:
    parent_run_id: str
    coefficients: list[float]
    runs: list[MergeResult]
    front: ParetoFront
    base_objectives: dict[str, float]
    base_hypervolume: float


@dataclass
class _Sources:
    """The runs to merge, loaded: their spec, the base and each run's task vector."""

    run_ids: list[str]
    spec: RunSpec
    base: object  # workbench.models.loading.BaseModel
    base_weights: dict
    vectors: list[dict]
    kinds: list[str]  # "full" or "lora" per run


def _check_same_setting(specs: list[RunSpec], run_ids: list[str]) -> None:
    first = specs[0]
    for run_id, spec in zip(run_ids[1:], specs[1:]):
        if spec.model.model_dump() != first.model.model_dump():
            raise WorkbenchError(
                f"run {run_id} was trained from another base model than run "
                f"{run_ids[0]}; only models of one base can be merged"
            )
        ours = [(o.name, o.direction) for o in spec.objectives]
        theirs = [(o.name, o.direction) for o in first.objectives]
        if ours != theirs:
            raise WorkbenchError(
                f"run {run_id} has objectives {ours}, run {run_ids[0]} {theirs}; "
                "merged models are evaluated on one set of objectives"
            )


def _download(client, run_id: str, artifact: str, folder: str) -> str:
    import mlflow

    # MLflow draws a progress bar per download unless told not to (the CLI tells it for good).
    try:
        with no_download_bars():
            return mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=folder,
                tracking_uri=client.tracking_uri,
            )
    except Exception as err:  # MLflow raises its own exception types
        what = (
            "has no saved model (was tracking.log_model false, or did it not finish?)"
            if artifact == "model"
            else f"has no {artifact}"
        )
        raise TrackingError(f"run {run_id} {what}: {err}") from None


def load_sources(run_ids: Sequence[str], *, uri: str | None = None, log=print) -> _Sources:
    """The runs' specs and task vectors over their common base (see the module docstring)."""
    from workbench.merging.lora import is_adapter, lora_deltas, read_adapter
    from workbench.merging.state_dicts import task_vector
    from workbench.models.loading import load_base, load_pretrained

    client = tracking.connect(uri)
    run_ids = list(run_ids)
    if len(set(run_ids)) != len(run_ids):
        raise SpecError(f"runs = {run_ids}: a run is named twice")
    for run_id in run_ids:
        try:
            status = client.get_run(run_id).info.status
        except Exception as err:  # MLflow's own exception types for a missing run
            raise TrackingError(
                f"no run {run_id} in the store {client.tracking_uri}: {err}"
            ) from None
        if status != "FINISHED":
            raise WorkbenchError(f"run {run_id} is {status}; only FINISHED runs can be merged")
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / f"run{i}" for i in range(len(run_ids))]
        specs = [
            RunSpec.from_file(_download(client, r, "spec.yaml", str(f)))
            for r, f in zip(run_ids, folders)
        ]
        _check_same_setting(specs, run_ids)
        base = load_base(specs[0].model, log=log)
        base_weights = {n: p.detach().clone() for n, p in base.model.named_parameters()}
        vectors, kinds = [], []
        for run_id, folder in zip(run_ids, folders):
            model_dir = _download(client, run_id, "model", str(folder))
            if is_adapter(model_dir):
                deltas = lora_deltas(*read_adapter(model_dir))
                unknown = sorted(set(deltas) - set(base_weights))
                if unknown:
                    raise WorkbenchError(
                        f"run {run_id}'s adapter changes weights the base lacks: {unknown[:3]}"
                    )
                vectors.append(deltas)
                kinds.append("lora")
            else:
                model, _ = load_pretrained(model_dir)
                vectors.append(task_vector(base_weights, dict(model.named_parameters())))
                kinds.append("full")
                del model
    return _Sources(run_ids, specs[0], base, base_weights, vectors, kinds)


def _settings(method: str, n: int, weights, **options) -> MergeSettings:
    return check_settings(method, n, weights, **options)


def _merged_weights(
    sources: _Sources, settings: MergeSettings, adamerging_steps: int
) -> tuple[dict, dict]:
    """(merged weights, AdaMerging's entropies or {})."""
    from workbench.merging.state_dicts import merge_models

    if not settings.info.learned:
        return merge_models(sources.base_weights, sources.vectors, settings), {}
    from workbench.data.encode import prompt_ids
    from workbench.data.sources import load_rows
    from workbench.merging.adamerging import adamerging, padded_batches
    from workbench.merging.tensors import sparsify

    spec, tokenizer = sources.spec, sources.base.tokenizer
    # Unlabeled inputs: prompts of the training split (never the held-out rows it is scored on).
    train_rows, _ = load_rows(spec.data, spec.train.seed)
    ids = [prompt_ids(tokenizer, row) for row in train_rows[:ADAMERGING_PROMPTS]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    vectors = sources.vectors
    if settings.density < 1:  # TIES-AdaMerging style: trim the task vectors first
        vectors = [
            {n: sparsify(t, "magnitude", settings.density) for n, t in v.items()} for v in vectors
        ]
    result = adamerging(
        sources.base.model,
        sources.base_weights,
        vectors,
        padded_batches(ids, pad),
        steps=adamerging_steps,
    )
    return result.weights, {
        "merge/entropy_initial": result.initial_entropy,
        "merge/entropy_final": result.final_entropy,
    }


def _merge_one(
    sources: _Sources,
    settings: MergeSettings,
    *,
    run_name: str,
    parent_run_id: str | None,
    adamerging_steps: int,
    coefficient: float | None = None,
) -> MergeResult:
    from mlflow.entities import Param

    from workbench.merging.state_dicts import load_weights
    from workbench.running.pipeline import evaluate_model

    weights, learned = _merged_weights(sources, settings, adamerging_steps)
    model = sources.base.model
    load_weights(model, weights)
    try:
        spec = sources.spec.updated(
            **{
                "adapter": {"name": "full"},  # the merged model is a full set of weights
                "tracking.run_name": run_name,
                "tracking.tags": {
                    **sources.spec.tracking.tags,
                    TAG_MERGE: settings.method,
                    TAG_MERGE_SOURCES: ",".join(sources.run_ids),
                },
            }
        )
        result = evaluate_model(
            spec,
            model=model,
            tokenizer=sources.base.tokenizer,
            run_name=run_name,
            parent_run_id=parent_run_id,
        )
        client = tracking.connect(spec.tracking.uri)
        params = {
            **settings.as_params(),
            "merge.sources": ",".join(sources.run_ids),
            "merge.source_kinds": ",".join(sources.kinds),
        }
        if coefficient is not None:
            params["merge.coefficient"] = f"{coefficient:g}"
        if settings.info.learned:
            params["merge.adamerging_steps"] = str(adamerging_steps)
        client.log_batch(
            result.run_id, params=[Param(k, v) for k, v in params.items()], synchronous=True
        )
        if learned:
            from mlflow.entities import Metric

            client.log_batch(
                result.run_id,
                metrics=[Metric(k, v, 0, 0) for k, v in learned.items()],
                synchronous=True,
            )
        if spec.tracking.log_model:
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder, safe_serialization=True)
                sources.base.tokenizer.save_pretrained(folder)
                client.log_artifacts(result.run_id, folder, "model")
    finally:
        load_weights(model, sources.base_weights)  # the next merge starts from the base again
    return MergeResult(
        result.run_id, result.objectives, settings, sources.run_ids, coefficient, learned
    )


def merge_runs(
    run_ids: Sequence[str],
    method: str = "task_arithmetic",
    weights: Sequence[float] | None = None,
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
    gamma: float = 0.01,
    lines_alpha: float | None = None,
    lines_beta: float | None = None,
    seed: int = 0,
    adamerging_steps: int = 20,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    uri: str | None = None,
    log=print,
) -> MergeResult:
    """Merge the models of ``run_ids`` with ``method`` (``workbench.merging.catalog.METHODS``),
    evaluate the merged model on the runs' objectives and record it as a run (see the module
    docstring). ``weights`` default to 1 each; ``density``, ``majority_sign_method``, ``gamma``,
    ``lines_alpha``/``lines_beta`` and ``seed`` (DARE's masks) are the methods' settings;
    ``adamerging_steps`` the optimisation steps of AdaMerging."""
    settings = _settings(
        method,
        len(run_ids),
        weights,
        density=density,
        majority_sign_method=majority_sign_method,
        gamma=gamma,
        lines_alpha=lines_alpha,
        lines_beta=lines_beta,
        seed=seed,
    )
    given = "" if settings.info.learned else " " + " ".join(f"{w:g}" for w in settings.weights)
    name = run_name or f"merge {method}{given}"
    with quiet_libraries():
        sources = load_sources(run_ids, uri=uri, log=log)
        return _merge_one(
            sources,
            settings,
            run_name=name,
            parent_run_id=parent_run_id,
            adamerging_steps=adamerging_steps,
        )


def merge_grid(
    run_a: str,
    run_b: str,
    coefficients: Sequence[float],
    method: str = "linear",
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
    gamma: float = 0.01,
    lines_alpha: float | None = None,
    lines_beta: float | None = None,
    seed: int = 0,
    run_name: str | None = None,
    uri: str | None = None,
    log=print,
) -> MergeGridResult:
    """One merged run per coefficient ``c`` (weights ``(1 - c, c)`` for ``run_a``, ``run_b``),
    children of one parent run that records their front (see the module docstring)."""
    coefficients = [float(c) for c in coefficients]
    if not coefficients or not all(math.isfinite(c) for c in coefficients):
        raise SpecError(f"merge.coefficients = {coefficients}: give one or more finite numbers")
    if method in METHODS and METHODS[method].learned:
        raise SpecError(
            f"merge.method = '{method}' learns its coefficients; a coefficient grid "
            "takes a method with given weights"
        )
    settings = [
        _settings(
            method,
            2,
            (1.0 - c, c),
            density=density,
            majority_sign_method=majority_sign_method,
            gamma=gamma,
            lines_alpha=lines_alpha,
            lines_beta=lines_beta,
            seed=seed,
        )
        for c in coefficients
    ]
    with quiet_libraries():
        return _merge_grid(run_a, run_b, coefficients, method, settings, run_name, uri, log)


def _merge_grid(
    run_a, run_b, coefficients, method, settings, run_name, uri, log
) -> MergeGridResult:

    sources = load_sources([run_a, run_b], uri=uri, log=log)
    client = tracking.connect(sources.spec.tracking.uri)
    parent_spec = sources.spec.updated(**{"tracking.run_name": run_name or f"merge-grid {method}"})
    parent_id = tracking.start_run(
        client,
        parent_spec,
        extra_tags={TAG_KIND: KIND_SWEEP, TAG_MERGE: method, TAG_MERGE_SOURCES: f"{run_a},{run_b}"},
    )
    with tracking.RunRecorder(client, parent_id) as parent:
        from mlflow.entities import Param

        params = {
            "merge.method": method,
            "merge.sources": f"{run_a},{run_b}",
            "merge.coefficients": ",".join(f"{c:g}" for c in coefficients),
        }
        client.log_batch(
            parent_id, params=[Param(k, v) for k, v in params.items()], synchronous=True
        )
        runs = []
        for i, (c, point) in enumerate(zip(coefficients, settings)):
            log(f"[{i + 1}/{len(coefficients)}] {method} c={c:g}")
            runs.append(
                _merge_one(
                    sources,
                    point,
                    run_name=f"{method} c={c:g}",
                    parent_run_id=parent_id,
                    adamerging_steps=0,
                    coefficient=c,
                )
            )
        names = [o.name for o in sources.spec.objectives]
        children = fronts.sweep_children(client, parent_id, order=[r.run_id for r in runs])
        front = fronts.front_from_runs(children, names)
        base = fronts.start_point(client, sources.run_ids[0], names)
        base_hv = fronts.point_hypervolume(front, base)
        fronts.record_front(
            parent, front, base_hv, f"Merging {method}: coefficient grid", base=base
        )
    return MergeGridResult(parent_id, coefficients, runs, front, base, base_hv)
