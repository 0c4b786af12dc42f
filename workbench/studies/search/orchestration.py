"""A search from start to end (:func:`run_search`): check the config, create the parent run
and the study, run the trials here or in worker processes, record the completed trials'
front on the parent, and leave no run or trial RUNNING whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbench.running.signals import SigtermRaisesInterrupt, StopRequests
from workbench.spec import registry
from workbench.spec.errors import RunFailed, SpecError
from workbench.spec.mlflow_names import (
    STUDY_PREFIX,
    TAG_KIND,
    TAG_PRUNING,
    TAG_SAMPLER,
    TAG_STORAGE,
    TAG_STUDY,
)
from workbench.spec.run_spec import RunSpec
from workbench.studies.search.pruning import resolve_rule
from workbench.studies.search.space import SearchSettings, check_space, parse_settings
from workbench.studies.search.study import (
    TrialOutcome,
    check_storage,
    default_storage,
    fail_orphaned_trials,
    load_study,
    open_storage,
    shown_url,
    study_outcomes,
)
from workbench.studies.search.trials import run_trials
from workbench.studies.search.workers import run_workers

STUDY_KIND = "study"


@dataclass
class SearchResult:
    parent_run_id: str
    study_name: str
    storage: str  # the URL with any password masked
    trials: list[TrialOutcome]  # this search's trials, by number
    front: Any  # ParetoFront over the completed trials' runs
    base_objectives: dict[str, float]
    base_hypervolume: float
    figure_path: Path | None = None


def check_counts(trials: int, workers: int) -> None:
    if trials < 1:
        raise SpecError(f"trials = {trials}: a search needs at least 1 trial")
    if workers < 1:
        raise SpecError(f"workers = {workers}: must be at least 1")


def run_search(
    spec: RunSpec | dict,
    search: SearchSettings | Mapping[str, Any],
    *,
    trials: int,
    workers: int = 1,
    progress: bool = False,
    log=print,
    figure_path: str | Path | None = None,
    timeout_s: float | None = None,
) -> SearchResult:
    """Run ``trials`` trials of a multi-objective Optuna study over ``search.space`` and record
    the front of the completed ones on a parent run.

    ``workers=1`` trains the trials one after another in this process; ``workers=K`` starts K
    worker processes that share the study through its storage (each takes its share of the
    cores as torch threads unless ``OMP_NUM_THREADS`` is set). ``timeout_s`` bounds the whole
    search (the workers are then stopped and the parent ends FAILED).
    """
    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    settings = parse_settings(search)
    check_counts(trials, workers)
    check_space(spec, settings)
    resolve_rule(settings.pruning)
    if settings.storage is not None:
        check_storage(settings.storage)
    workers = min(workers, trials)
    if workers > 1 and registry.ref_module(settings.pruning).startswith("__"):
        raise SpecError(
            f"search.pruning = {settings.pruning!r}: a worker process cannot import a "
            "rule defined in a notebook cell or a script run directly; move it into a "
            ".py file and name it module:function"
        )

    from workbench import tracking
    from workbench.data.sources import load_rows
    from workbench.fronts import finished_runs as fronts
    from workbench.tracking.naming import study_run_name

    # Bad data fails here, before any run is created.
    load_rows(spec.data, spec.train.seed, row_kind=registry.METHODS[spec.method.name].row_kind)
    client = tracking.connect(spec.tracking.uri)
    storage = settings.storage or default_storage(client.tracking_uri)
    optuna_storage = open_storage(storage)  # a storage that cannot be opened fails before any run
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    parent_spec = spec.updated(**{"tracking.run_name": study_run_name(spec, "search")})
    # As for a sweep's parent: signals only set a flag while the parent is created, then
    # SIGTERM raises KeyboardInterrupt like Ctrl-C, so the parent ends KILLED.
    with SigtermRaisesInterrupt():
        with StopRequests() as stop:
            parent_id = tracking.start_run(client, parent_spec, extra_tags={TAG_KIND: STUDY_KIND})
            recorder = tracking.RunRecorder(client, parent_id)
        with recorder as parent:
            if stop.is_set():
                raise KeyboardInterrupt
            study_name = settings.study or f"{spec.tracking.experiment}-{parent_id[:8]}"
            study = load_study(settings, optuna_storage, study_name, spec, create=True)
            parent.set_tags(
                {
                    TAG_STUDY: study_name,
                    TAG_STORAGE: shown_url(storage),
                    TAG_SAMPLER: settings.sampler,
                    TAG_PRUNING: settings.pruning,
                }
            )
            parent.log_text(
                yaml.safe_dump(
                    {
                        "search": settings.model_dump(mode="json", exclude={"storage"}),
                        "trials": trials,
                        "workers": workers,
                    },
                    sort_keys=False,
                ),
                "search.yaml",
            )
            try:
                if workers == 1:
                    run_trials(
                        spec,
                        settings,
                        storage=storage,
                        study_name=study_name,
                        parent_run_id=parent_id,
                        trials=trials,
                        progress=progress,
                        log=log,
                    )
                else:
                    run_workers(
                        spec,
                        settings,
                        storage,
                        study_name,
                        parent_id,
                        trials,
                        workers,
                        log,
                        deadline,
                    )
            except BaseException:
                _end_open_children(client, spec, parent_id, "KILLED", None)
                fail_orphaned_trials(study)
                raise
            _end_open_children(
                client,
                spec,
                parent_id,
                "FAILED",
                "its worker process exited without ending the run",
            )
            fail_orphaned_trials(study)
            outcomes = study_outcomes(study, parent_id)
            counts = {
                s: sum(o.state == s for o in outcomes) for s in ("COMPLETE", "PRUNED", "FAIL")
            }
            parent.log_metrics(
                {
                    f"{STUDY_PREFIX}trials": float(len(outcomes)),
                    f"{STUDY_PREFIX}completed_trials": float(counts["COMPLETE"]),
                    f"{STUDY_PREFIX}pruned_trials": float(counts["PRUNED"]),
                    f"{STUDY_PREFIX}failed_trials": float(counts["FAIL"]),
                },
                step=0,
            )
            names = [o.name for o in spec.objectives]
            children = fronts.sweep_children(client, parent_id)
            if not children:
                raise RunFailed(
                    f"search {parent_id}: no trial finished ({counts['PRUNED']} pruned, "
                    f"{counts['FAIL']} failed); see the trials' runs"
                )
            front = fronts.front_from_runs(children, names)
            base = fronts.start_point(client, children[0]["run_id"], names)
            base_hv = fronts.point_hypervolume(front, base)
            figure = fronts.record_front(
                parent,
                front,
                base_hv,
                f"Pareto front of the search ({spec.data.source})",
                prefix="study",
                base=base,
            )
            saved = None
            if figure_path is not None:
                from workbench.fronts import plots

                saved = plots.write_html(figure, figure_path)
            return SearchResult(
                parent_id, study_name, shown_url(storage), outcomes, front, base, base_hv, saved
            )


def _end_open_children(
    client, spec: RunSpec, parent_id: str, status: str, error: str | None
) -> None:
    """Runs of this search still RUNNING once its workers are gone (killed hard, or stopped
    before their runner could end them) end ``status``: never left RUNNING."""
    from workbench import tracking

    for run in tracking.runs_frame(
        client, spec.tracking.experiment, parent_run_id=parent_id, status="RUNNING"
    ):
        tracking.end_run(client, run["run_id"], status, error)
