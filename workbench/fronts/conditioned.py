"""A front from one weight-conditioned model: train once, evaluate at any weights.

:func:`conditioned_front` trains one ``conditioned-sft`` run (each example with its own
training weights in its prompt: :mod:`workbench.methods.multi_objective.conditioning`), then
evaluates the trained model, in memory, at each weight point with that point's prefix
(:func:`~workbench.running.pipeline.evaluate_model`: an evaluation run, nothing trains), and
records the points' front on a parent run like a
sweep's: ``sweep/hypervolume``, ``sweep/base_hypervolume``, ``sweep/front_size``,
``front.json`` and the plot. The training run and the evaluation runs are the parent's
children (tags ``workbench.kind=evaluation`` and ``workbench.conditioned.model``, the
training run's id, on each evaluation); the front is over the evaluations. The base point
(``sweep/base_hypervolume``) is the training run's step-0 evaluation: the base model asked
with the spec's prefix, which it has never seen, so it usually scores near nothing.

The points are given like a sweep's (:func:`workbench.studies.sweep.sweep_specs`): a spec whose
method is ``mo-sft`` is trained as ``conditioned-sft`` with the same settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import tracking
from workbench.fronts import finished_runs as fronts
from workbench.fronts import plots
from workbench.fronts.pareto import ParetoFront
from workbench.methods.sft.params import MultiObjectiveSFTParams
from workbench.running.pipeline import RunPipeline, RunResult, evaluate_model, run_settings
from workbench.running.signals import SigtermRaisesInterrupt, StopRequests
from workbench.spec.errors import RunFailed, SpecError
from workbench.spec.mlflow_names import KIND_SWEEP, TAG_BUILDER, TAG_KIND
from workbench.spec.run_spec import RunSpec
from workbench.studies.sweep import design_points, sweep_specs, weighted_objectives
from workbench.tracking.naming import study_run_name

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from workbench.tracking.recorder import RunRecorder

METHOD = "conditioned-sft"
TAG_MODEL = "workbench.conditioned.model"


@dataclass
class ConditionedFrontResult:
    parent_run_id: str
    training_run_id: str
    weights: list[float | Sequence[float]]  # the evaluated points, as given
    runs: list[RunResult]  # one evaluation run per point
    front: ParetoFront
    base_objectives: dict[str, float]
    base_hypervolume: float
    figure_path: Path | None = None


def mo_sft_variant(spec: RunSpec, method: str, **options: Any) -> RunSpec:
    """``spec`` trained by ``method``, a variant of ``mo-sft`` with the same terms (its
    settings, such as the brevity scale, carry over; ``options`` set the variant's own)."""
    assert spec.method is not None  # a validated spec has its method
    current = spec.method.model_dump(mode="json")
    if current["name"] not in ("mo-sft", method):
        raise SpecError(
            f"method = '{current['name']}': this front builder trains the terms of mo-sft; "
            f"use method mo-sft or {method}"
        )
    if current["name"] != method:
        current = {k: v for k, v in current.items() if k in MultiObjectiveSFTParams.model_fields}
    return spec.updated(method={**current, **options, "name": method})


@contextlib.contextmanager
def parent_run(spec: RunSpec, tags: dict[str, str]) -> Iterator[tuple[MlflowClient, RunRecorder]]:
    """A study's parent run as a recorder (ends FINISHED, FAILED or KILLED with the block).
    Ctrl-C or SIGTERM while it is created only sets a flag (no run without its recorder);
    afterwards SIGTERM raises KeyboardInterrupt like Ctrl-C, so the parent ends KILLED."""
    client = tracking.connect(spec.tracking.uri)
    with SigtermRaisesInterrupt():
        with StopRequests() as stop:
            parent_id = tracking.start_run(client, spec, extra_tags=tags)
            recorder = tracking.RunRecorder(client, parent_id)
        with recorder as parent:
            if stop.is_set():
                raise KeyboardInterrupt
            yield client, parent


def conditioned_front(
    spec: RunSpec,
    weights: Sequence[float | Sequence[float]] | None = None,
    *,
    points: int | None = None,
    design: str = "grid",
    seed: int = 0,
    alpha: float | None = None,
    progress: bool = False,
    log: Callable[[str], object] = print,
    figure_path: str | Path | None = None,
) -> ConditionedFrontResult:
    """Train one weight-conditioned model and record its front at ``weights`` (or ``points``
    of a ``design``, as :func:`workbench.studies.sweep.run_sweep` takes them) on a parent run.
    ``alpha`` overrides the method's Dirichlet concentration."""
    if (weights is None) == (points is None):
        raise SpecError("give either weights or points (with a design), not both or neither")
    spec = mo_sft_variant(spec, METHOD, **({} if alpha is None else {"alpha": alpha}))
    names = weighted_objectives(spec)
    if weights is None:
        assert points is not None  # one of the two is given (checked above)
        if len(names) < 2:
            sweep_specs(spec, [])  # the sweep's message for a spec with too few weighted objectives
        weights = design_points(design, len(names), points, seed=seed)
    point_specs = sweep_specs(spec, weights)  # checks the points before anything runs
    names += [o.name for o in spec.objectives if o.name not in names]
    parent_spec = spec.updated(**{"tracking.run_name": study_run_name(spec, "front")})
    with (
        run_settings(),
        parent_run(parent_spec, {TAG_KIND: KIND_SWEEP, TAG_BUILDER: "conditioned"}) as (
            client,
            parent,
        ),
    ):
        log(f"training one {METHOD} model ...")
        training = RunPipeline(
            spec.updated(**{"tracking.run_name": "conditioned model"}),
            parent_run_id=parent.run_id,
            progress=progress,
            log=log,
        )
        trained = training.execute()
        prepared, trained_id = training.prepared, trained.run_id
        assert prepared is not None and trained_id is not None  # it ran: prepared and tracked
        model, tokenizer = _evaluable(prepared.model), prepared.base.tokenizer
        runs = []
        for i, point in enumerate(point_specs):
            log(f"[{i + 1}/{len(point_specs)}] {point.tracking.run_name}")
            runs.append(
                evaluate_model(
                    point.updated(
                        **{
                            "adapter": {"name": "full"},  # the model in memory, as trained
                            "tracking.tags": {**point.tracking.tags, TAG_MODEL: trained_id},
                        }
                    ),
                    model=model,
                    tokenizer=tokenizer,
                    run_name=point.tracking.run_name,
                    parent_run_id=parent.run_id,
                )
            )
        children = [
            c
            for c in fronts.sweep_children(
                client, parent.run_id, order=[r.run_id for r in runs if r.run_id is not None]
            )
            if c["run_id"] != trained_id
        ]
        if not children:
            raise RunFailed(f"conditioned front {parent.run_id}: no evaluation finished")
        front = fronts.front_from_runs(children, names)
        base = fronts.start_point(client, trained_id, names)
        base_hv = fronts.point_hypervolume(front, base)
        figure = fronts.record_front(
            parent,
            front,
            base_hv,
            f"Pareto front of one weight-conditioned model ({spec.data.source})",
            base=base,
        )
        saved = plots.write_html(figure, figure_path) if figure_path is not None else None
        return ConditionedFrontResult(
            parent.run_id, trained_id, list(weights), runs, front, base, base_hv, saved
        )


def _evaluable(model: Any) -> Any:
    """The trained model as plain weights: a LoRA model's adapter merged into a copy (the
    evaluation runs score a full model; the trained run keeps its adapter)."""
    merge = getattr(model, "merge_and_unload", None)
    if merge is None:
        return model
    import copy

    return copy.deepcopy(model).merge_and_unload()
