"""One worker's loop: ask the shared study for a trial, train it as a child run, tell the result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.spec.errors import WorkbenchError
from workbench.spec.mlflow_names import TAG_STUDY, TAG_TRIAL
from workbench.spec.run_spec import RunSpec
from workbench.studies.search.pruning import TrialPruner, resolve_rule
from workbench.studies.search.space import SearchSettings, apply_params, suggest
from workbench.studies.search.study import (
    PARENT_ATTR,
    PROCESS_ATTR,
    TrialOutcome,
    fail_orphaned_trials,
    load_study,
    open_storage,
)


def trial_run_name(number: int, params: Mapping[str, Any]) -> str:
    """A trial's run name: its sampled values first, where a glance at the runs table finds
    what differs (``adapter.r=16, optimizer.lr=0.001 (trial 3)``; a training weight shows as
    ``correctness=0.53``), then its number in the Optuna study."""
    from workbench.tracking.naming import changes_label  # mlflow loads only once a study runs

    return f"{changes_label(params)} (trial {number})" if params else f"trial {number}"


def trial_spec(spec: RunSpec, params: Mapping[str, Any], study_name: str, number: int) -> RunSpec:
    """The trial's run spec: the sampled values, its name and the study's tags."""
    tags = {**spec.tracking.tags, TAG_STUDY: study_name, TAG_TRIAL: str(number)}
    return apply_params(spec, params).updated(
        **{"tracking.run_name": trial_run_name(number, params), "tracking.tags": tags}
    )


def run_trials(
    spec: RunSpec,
    settings: SearchSettings,
    *,
    storage: str,
    study_name: str,
    parent_run_id: str,
    trials: int,
    worker: int = 0,
    progress: bool = False,
    log=print,
) -> list[TrialOutcome]:
    """One worker: ``trials`` times ask the shared study for a trial, train it as a child run of
    ``parent_run_id`` and tell the study its objectives (or PRUNED, or FAIL). Another machine
    joins a study by calling this with the same storage, study and parent (and MLflow store).
    """
    from optuna.trial import TrialState

    from workbench.running import liveness
    from workbench.running.pipeline import run

    study = load_study(settings, open_storage(storage), study_name, spec, worker)
    rule = resolve_rule(settings.pruning)
    names = [o.name for o in spec.objectives]
    process = liveness.process_tags()
    outcomes = []
    for _ in range(trials):
        fail_orphaned_trials(study)
        trial = study.ask()
        told = False
        try:
            trial.set_user_attr(PROCESS_ATTR, process)
            trial.set_user_attr(PARENT_ATTR, parent_run_id)
            params = suggest(trial, spec, settings.space)
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
            )
            log(f"[worker {worker}] trial {trial.number}: {shown}")
            pruner = TrialPruner(study, trial, spec, rule, settings.pruning)
            try:
                child = trial_spec(spec, params, study_name, trial.number)
                result = run(
                    child,
                    parent_run_id=parent_run_id,
                    observers=[pruner],
                    progress=progress,
                    log=log,
                )
            except KeyboardInterrupt:
                if pruner.reason is None:
                    raise
                study.tell(trial, state=TrialState.PRUNED)
                told = True
                log(f"[worker {worker}] trial {trial.number}: PRUNED ({pruner.reason})")
                outcomes.append(
                    TrialOutcome(
                        trial.number, "PRUNED", _run_of(pruner), params, note=pruner.reason
                    )
                )
                continue
            except WorkbenchError as err:  # the run ended FAILED, or the trial's spec is invalid
                trial.set_user_attr("error", str(err)[:2000])
                study.tell(trial, state=TrialState.FAIL)
                told = True
                log(f"[worker {worker}] trial {trial.number}: FAIL ({err})")
                outcomes.append(
                    TrialOutcome(trial.number, "FAIL", _run_of(pruner), params, note=str(err))
                )
                continue
            values = [float(result.objectives[n]) for n in names]
            frozen = study.tell(trial, values, skip_if_finished=True)
            told = True
            state = frozen.state.name  # a NaN value makes Optuna fail the trial
            log(
                f"[worker {worker}] trial {trial.number}: {state} "
                + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values))
            )
            outcomes.append(
                TrialOutcome(trial.number, state, result.run_id, params, dict(zip(names, values)))
            )
        finally:
            if not told:  # interrupted (Ctrl-C, SIGTERM) or an unexpected error
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return outcomes


def _run_of(pruner: TrialPruner) -> str | None:
    return pruner.context.run_id if pruner.context is not None else None
