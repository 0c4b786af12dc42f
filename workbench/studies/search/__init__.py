"""Multi-objective search: Optuna samples spec fields, each trial is a run under a parent run.

A study config is a run spec with a ``search`` section (:class:`SearchSettings`): the
*space* maps dotted spec fields to a range (``{low, high}``, optionally ``log`` or
``step``) or ``{choices: [...]}`` — a training weight (``objectives.<name>.weight`` of an
objective with a loss ``term``), adapter settings (``adapter.r``), ``optimizer.lr``, any
field of the spec. The study's objectives are the spec's, with their directions.

Trials go through Optuna's ask-and-tell interface with its multi-objective samplers
(NSGA-II by default, or the GP sampler with expected hypervolume improvement) and an RDB
storage (a sqlite file next to a local MLflow store by default, or any SQLAlchemy URL such
as a PostgreSQL one), so several worker processes, on this machine or others, share one
study: each asks for a trial, trains it as an ordinary run (a child of the study's parent
run, named ``trial <number>``, tags ``workbench.study`` and ``workbench.trial``, the
sampled values in its spec params) and tells the study the run's final objectives.

Pruning: Optuna's pruners and ``Trial.should_prune`` are single-objective only, so a
:class:`TrialPruner` observer hears each evaluation of a trial's run, stores the point on
the trial (user attribute ``objectives_at_step_<step>``) and asks a pruning rule; the
default rule, :func:`prune_dominated`, prunes a trial whose intermediate point is
dominated (no better in any objective, worse in one) by a completed trial's point at the
same step. A pruned trial's run ends KILLED with the reason (tag ``workbench.error``) and
its Optuna trial PRUNED; no trial or run is left RUNNING.

When the trials are done the parent run (tag ``workbench.kind=study``) records the front
of the completed trials, read back from MLflow (:mod:`workbench.fronts.finished_runs`):
``study/hypervolume``, ``study/base_hypervolume``, ``study/front_size``, ``front.json`` and
the plot. Ctrl-C or SIGTERM stops the workers; their runs and the parent end KILLED.

The modules, in the order a search uses them: :mod:`~workbench.studies.search.space` (the
``search`` section and the space), :mod:`~workbench.studies.search.pruning` (the rules and the
observer), :mod:`~workbench.studies.search.study` (the Optuna study, its storage and trials),
:mod:`~workbench.studies.search.trials` (one worker's loop),
:mod:`~workbench.studies.search.workers` (the worker processes) and
:mod:`~workbench.studies.search.orchestration` (:func:`run_search`).

The CLI imports this package to validate a study config before any training library
loads, so its modules import optuna, mlflow and the runner where they are used.
"""

from workbench.studies.search.orchestration import (
    STUDY_KIND,
    SearchResult,
    check_counts,
    run_search,
)
from workbench.studies.search.pruning import (
    PRUNING_RULES,
    RUN_ATTR,
    STEP_ATTR,
    PruneQuery,
    TrialPruner,
    completed_points,
    dominates,
    prune_dominated,
    prune_never,
    resolve_rule,
)
from workbench.studies.search.space import (
    SAMPLERS,
    Dimension,
    SearchSettings,
    apply_params,
    check_space,
    is_integer,
    load_config,
    parse_settings,
    suggest,
)
from workbench.studies.search.study import (
    PARENT_ATTR,
    PROCESS_ATTR,
    TrialOutcome,
    check_storage,
    default_storage,
    fail_orphaned_trials,
    load_study,
    make_sampler,
    open_storage,
    shown_url,
    study_outcomes,
)
from workbench.studies.search.trials import run_trials, trial_run_name, trial_spec
from workbench.studies.search.workers import POLL_S, STORAGE_ENV

__all__ = [
    "PARENT_ATTR",
    "POLL_S",
    "PROCESS_ATTR",
    "PRUNING_RULES",
    "RUN_ATTR",
    "SAMPLERS",
    "STEP_ATTR",
    "STORAGE_ENV",
    "STUDY_KIND",
    "Dimension",
    "PruneQuery",
    "SearchResult",
    "SearchSettings",
    "TrialOutcome",
    "TrialPruner",
    "apply_params",
    "check_counts",
    "check_space",
    "check_storage",
    "completed_points",
    "default_storage",
    "dominates",
    "fail_orphaned_trials",
    "is_integer",
    "load_config",
    "load_study",
    "make_sampler",
    "open_storage",
    "parse_settings",
    "prune_dominated",
    "prune_never",
    "resolve_rule",
    "run_search",
    "run_trials",
    "shown_url",
    "study_outcomes",
    "suggest",
    "trial_run_name",
    "trial_spec",
]
