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
of the completed trials, read back from MLflow (:mod:`workbench.fronts`):
``study/hypervolume``, ``study/base_hypervolume``, ``study/front_size``, ``front.json`` and
the plot. Ctrl-C or SIGTERM stops the workers; their runs and the parent end KILLED.

This module is imported by the CLI to validate a study config before any training library
loads, so optuna, mlflow and the runner are imported where they are used.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench import registry
from workbench.errors import RunFailed, SpecError, WorkbenchError
from workbench.events import Evaluation, RunContext, RunObserver
from workbench.spec import RunSpec

SAMPLERS = ("nsga2", "gp")
STUDY_KIND = "study"
TAG_STUDY = "workbench.study"
TAG_TRIAL = "workbench.trial"
# Trial user attributes: the objectives at each evaluation, the MLflow run, the worker.
STEP_ATTR = "objectives_at_step_"
RUN_ATTR = "mlflow_run_id"
PARENT_ATTR = "mlflow_parent_run_id"
PROCESS_ATTR = "worker_process"
# The environment variable that hands workers the storage URL (it may hold credentials,
# so it is never written to a file or a run).
STORAGE_ENV = "WORKBENCH_SEARCH_STORAGE"
POLL_S = 0.5


# --------------------------------------------------------------------------- the config


class Dimension(BaseModel):
    """One searched field: a range ``low``..``high`` (``log`` scale, ``step``) or ``choices``."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(None, description="Lowest value (with high).")
    high: float | None = Field(None, description="Highest value (with low).")
    log: bool = Field(False, description="Sample on a log scale (low > 0).")
    step: float | None = Field(None, gt=0, description="Spacing of the values from low.")
    choices: list[Any] | None = Field(None, min_length=1, description="Values to choose from.")

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices or low/high (with log or step), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g}), both finite")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class SearchSettings(BaseModel):
    """The ``search`` section of a study config."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Dimension] = Field(
        ..., min_length=1,
        description="Dotted spec field -> Dimension, e.g. 'adapter.r': {choices: [2, 4, 8]}, "
                    "'optimizer.lr': {low: 1e-4, high: 1e-2, log: true}, "
                    "'objectives.correctness.weight': {low: 0.1, high: 0.9}.")
    sampler: Literal["nsga2", "gp"] = Field(
        "nsga2", description="nsga2: Optuna's NSGA-II; gp: its Gaussian-process sampler "
                             "(expected hypervolume improvement).")
    population_size: int = Field(8, ge=2, description="NSGA-II: trials per generation.")
    startup_trials: int = Field(5, ge=1, description="gp: random trials before the GP is fitted.")
    seed: int = Field(0, description="Sampler seed; worker k uses seed + k, so workers differ.")
    pruning: str = Field(
        "dominated", description="dominated (prune a trial dominated by a completed one at the "
                                 "same step), none, or 'module:function' (a PruneQuery -> "
                                 "reason or None).")
    storage: str | None = Field(
        None, description="SQLAlchemy URL of the Optuna database (default: optuna.db next to a "
                          "local MLflow store). Credentials belong in the environment (PGPASSWORD).")
    study: str | None = Field(
        None, description="Optuna study name (default: the experiment and the parent run's id); "
                          "an existing study continues.")

    @field_validator("pruning")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v not in PRUNING_RULES and ":" not in v:
            raise ValueError(f"unknown rule; allowed: {', '.join(PRUNING_RULES)}, or 'module:function'")
        return v


def parse_settings(data: Mapping[str, Any] | SearchSettings) -> SearchSettings:
    if isinstance(data, SearchSettings):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(f"search must be a mapping of settings, got {type(data).__name__}")
    try:
        return SearchSettings.model_validate(dict(data))
    except ValidationError as err:
        lines = ["invalid search settings:"]
        for e in err.errors():
            where = ".".join(str(p) for p in ("search", *e["loc"]))
            shown = repr(e.get("input"))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field; check its spelling"
            lines.append(f"  {where} = {shown}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_config(path: str | Path, **changes: Any) -> tuple[RunSpec, SearchSettings]:
    """A study config file: a YAML run spec with a ``search`` section. ``changes`` are dotted
    spec changes (``train.steps``) or search settings (``search.sampler``); None is ignored."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"study config {path} does not exist; pass the path of a YAML run spec "
                        "with a search section")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SpecError(f"study config {path} cannot be read: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("search"), dict):
        raise SpecError(f"study config {path} has no search section; add one, e.g.\n"
                        "search:\n  space:\n    optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}")
    search = dict(data.pop("search"))
    spec_changes = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key.startswith("search."):
            search[key.removeprefix("search.")] = value
        else:
            spec_changes[key] = value
    spec = RunSpec.parse(data)
    if spec_changes:
        spec = spec.updated(**spec_changes)
    settings = parse_settings(search)
    check_space(spec, settings)
    return spec, settings


# --------------------------------------------------------------------------- the space


def apply_params(spec: RunSpec, params: Mapping[str, Any]) -> RunSpec:
    """``spec`` with the sampled ``params`` set (dotted fields; ``objectives.<name>.<field>``
    addresses an objective by name)."""
    objectives = {o.name: o.model_dump(mode="json") for o in spec.objectives}
    dotted, touched = {}, False
    for path, value in params.items():
        parts = path.split(".")
        if parts[0] == "objectives":
            if len(parts) != 3 or parts[1] not in objectives:
                raise SpecError(f"search.space.{path}: objectives are addressed as "
                                f"objectives.<name>.weight; names: {', '.join(objectives)}")
            if parts[2] != "weight":
                raise SpecError(f"search.space.{path}: only an objective's training weight "
                                "(objectives.<name>.weight) can be searched")
            if objectives[parts[1]].get("term") is None:
                raise SpecError(f"search.space.{path}: objective '{parts[1]}' has no loss term, so "
                                "its weight trains nothing; search the weight of an objective "
                                "with a term")
            objectives[parts[1]]["weight"] = value
            touched = True
        elif len(parts) < 2:
            raise SpecError(f"search.space.{path}: name a field inside a section, e.g. "
                            "optimizer.lr or adapter.r")
        else:
            dotted[path] = value
    if touched:
        dotted["objectives"] = list(objectives.values())
    return spec.updated(**dotted)


def _current_value(spec: RunSpec, path: str) -> Any:
    parts = path.split(".")
    if parts[0] == "objectives" and len(parts) == 3:
        return next((getattr(o, parts[2], None) for o in spec.objectives if o.name == parts[1]), None)
    node: Any = spec.model_dump(mode="json")
    for key in parts:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def is_integer(spec: RunSpec, path: str, dim: Dimension) -> bool:
    """Whether a range is sampled as integers: the field holds an int and the bounds are whole."""
    current = _current_value(spec, path)
    whole = all(float(v).is_integer() for v in (dim.low, dim.high, dim.step or 1))
    return isinstance(current, int) and not isinstance(current, bool) and whole


def check_space(spec: RunSpec, settings: SearchSettings) -> None:
    """Every searched field exists and takes the ends of its range (or each choice), so a bad
    space fails here, naming the field, the value and what is allowed."""
    for path, dim in settings.space.items():
        values = dim.choices if dim.choices is not None else [dim.low, dim.high]
        if dim.choices is None and is_integer(spec, path, dim):
            values = [int(v) for v in values]
        for value in values:
            try:
                apply_params(spec, {path: value})
            except SpecError as err:
                detail = str(err).removeprefix("invalid run spec:").strip()
                if detail.startswith(f"search.space.{path}"):
                    raise
                raise SpecError(f"search.space.{path} = {value!r}: not a valid value of the "
                                f"spec field:\n  {detail}") from None


def suggest(trial, spec: RunSpec, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Ask an Optuna trial for a value of every searched field (the param names are the paths)."""
    params = {}
    for path, dim in space.items():
        if dim.choices is not None:
            params[path] = trial.suggest_categorical(path, dim.choices)
        elif is_integer(spec, path, dim):
            params[path] = trial.suggest_int(path, int(dim.low), int(dim.high),
                                             step=int(dim.step or 1), log=dim.log)
        else:
            params[path] = trial.suggest_float(path, dim.low, dim.high, step=dim.step, log=dim.log)
    return params


# --------------------------------------------------------------------------- pruning


@dataclass
class PruneQuery:
    """What a pruning rule sees at one evaluation of a running trial."""

    trial_number: int
    step: int
    values: dict[str, float]  # this trial's objectives at ``step``
    directions: dict[str, str]  # objective -> 'min' | 'max'
    completed: dict[int, dict[int, dict[str, float]]]  # completed trial -> step -> objectives


def dominates(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """Whether point ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for name, direction in directions.items():
        x, y = (a[name], b[name]) if direction == "min" else (-a[name], -b[name])
        if x > y:
            return False
        better = better or x < y
    return better


def prune_dominated(query: PruneQuery) -> str | None:
    """Prune when a completed trial's point at the same step dominates this trial's point
    (the objectives it lacks at that step are not compared)."""
    if any(not math.isfinite(v) for v in query.values.values()):
        return f"an objective is not finite at step {query.step}"
    for number, by_step in sorted(query.completed.items()):
        other = by_step.get(query.step)
        if other is None or any(n not in other for n in query.directions):
            continue
        if dominates(other, query.values, query.directions):
            shown = ", ".join(f"{n}={query.values[n]:.4g} vs {other[n]:.4g}" for n in query.directions)
            return f"dominated by completed trial {number} at step {query.step} ({shown})"
    return None


def prune_never(query: PruneQuery) -> str | None:
    return None


PRUNING_RULES: dict[str, Callable[[PruneQuery], str | None]] = {
    "dominated": prune_dominated,
    "none": prune_never,
}


def resolve_rule(name: str) -> Callable[[PruneQuery], str | None]:
    """A built-in rule by name, or a function named ``module:function``."""
    if name in PRUNING_RULES:
        return PRUNING_RULES[name]
    if ":" not in name:
        raise SpecError(f"search.pruning = {name!r}: unknown rule; allowed: "
                        f"{', '.join(PRUNING_RULES)}, or 'module:function'")
    try:
        rule = registry.resolve(name)
    except (ImportError, AttributeError) as err:
        raise SpecError(f"search.pruning = {name!r}: cannot be imported ({err})") from None
    if not callable(rule):
        raise SpecError(f"search.pruning = {name!r}: not a function")
    return rule


class TrialPruner(RunObserver):
    """Reports a trial's objectives at each evaluation to its Optuna trial and stops the run
    (``context.request_stop``: it ends KILLED with the reason) when the rule says so.

    Never at step 0 (the base model, the same for every trial) nor at the last step (the run
    is finishing anyway).
    """

    def __init__(self, study, trial, spec: RunSpec, rule: Callable[[PruneQuery], str | None],
                 rule_name: str):
        self.study, self.trial, self.rule, self.rule_name = study, trial, rule, rule_name
        self.directions = {o.name: o.direction for o in spec.objectives}
        self.total_steps = spec.train.steps
        self.context: RunContext | None = None
        self.reason: str | None = None

    def on_start(self, context: RunContext) -> None:
        self.context = context
        self.trial.set_user_attr(RUN_ATTR, context.run_id)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        values = {n: float(evaluation.objectives[n]) for n in self.directions
                  if n in evaluation.objectives}
        self.trial.set_user_attr(f"{STEP_ATTR}{evaluation.step}", values)
        if evaluation.step == 0 or evaluation.step >= self.total_steps or self.reason is not None:
            return
        if len(values) < len(self.directions):
            return
        query = PruneQuery(self.trial.number, evaluation.step, values, self.directions,
                           completed_points(self.study))
        reason = self.rule(query)
        if reason:
            self.reason = f"pruned by the {self.rule_name} rule: {reason}"
            self.trial.set_user_attr("pruned", self.reason)
            self.context.request_stop(self.reason)


def completed_points(study) -> dict[int, dict[int, dict[str, float]]]:
    """Each completed trial's objectives at each evaluation step, from its user attributes."""
    from optuna.trial import TrialState

    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        out[t.number] = {int(k[len(STEP_ATTR):]): v for k, v in t.user_attrs.items()
                         if k.startswith(STEP_ATTR)}
    return out


# --------------------------------------------------------------------------- the study


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` next to a local sqlite MLflow store, else in the local store folder."""
    from workbench import paths

    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri[len("sqlite:///"):]).parent
    else:
        folder = paths.default_store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def shown_url(url: str) -> str:
    """A storage URL as it may be shown or recorded: any password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_storage(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        raise SpecError(f"search.storage = {url!r}: not a database URL; e.g. "
                        "sqlite:///optuna.db or postgresql+psycopg2://user@host/db") from None


def open_storage(url: str):
    """Optuna's RDB storage; sqlite waits for a lock instead of failing while another
    worker writes."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_sampler(settings: SearchSettings, worker: int = 0):
    import optuna

    seed = settings.seed + worker
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=settings.startup_trials)
    return optuna.samplers.NSGAIISampler(population_size=settings.population_size, seed=seed)


def load_study(settings: SearchSettings, storage, study_name: str, spec: RunSpec, worker: int = 0,
               create: bool = False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize" if o.direction == "min" else "maximize" for o in spec.objectives]
    if create:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions,
                                    sampler=make_sampler(settings, worker), load_if_exists=True)
        names = study.user_attrs.get("objectives")
        wanted = [o.name for o in spec.objectives]
        if [d.name.lower() for d in study.directions] != directions or names not in (None, wanted):
            raise SpecError(f"search.study = {study_name!r}: the stored study optimises {names} "
                            f"({[d.name.lower() for d in study.directions]}), this spec {wanted} "
                            f"({directions}); name another study")
        study.set_user_attr("objectives", wanted)
        return study
    return optuna.load_study(storage=storage, study_name=study_name,
                             sampler=make_sampler(settings, worker))


def fail_orphaned_trials(study) -> list[int]:
    """End FAIL the RUNNING trials whose worker process on this host is gone (killed hard),
    so none stays RUNNING; trials of other hosts are left to their workers."""
    from optuna.trial import TrialState

    from workbench import liveness

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        process = t.user_attrs.get(PROCESS_ATTR)
        if not process or process.get(liveness.HOST_TAG) != liveness.this_host():
            continue
        if not liveness.process_alive(int(process[liveness.PID_TAG]), float(process[liveness.START_TAG])):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


# --------------------------------------------------------------------------- trials


@dataclass
class TrialOutcome:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL (RUNNING only while a worker trains it)
    run_id: str | None
    params: dict[str, Any]
    values: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # the prune reason or the error


def trial_spec(spec: RunSpec, params: Mapping[str, Any], study_name: str, number: int) -> RunSpec:
    """The trial's run spec: the sampled values, its name and the study's tags."""
    tags = {**spec.tracking.tags, TAG_STUDY: study_name, TAG_TRIAL: str(number)}
    return apply_params(spec, params).updated(**{"tracking.run_name": f"trial {number}",
                                                 "tracking.tags": tags})


def run_trials(spec: RunSpec, settings: SearchSettings, *, storage: str, study_name: str,
               parent_run_id: str, trials: int, worker: int = 0, progress: bool = False,
               log=print) -> list[TrialOutcome]:
    """One worker: ``trials`` times ask the shared study for a trial, train it as a child run of
    ``parent_run_id`` and tell the study its objectives (or PRUNED, or FAIL). Another machine
    joins a study by calling this with the same storage, study and parent (and MLflow store).
    """
    from optuna.trial import TrialState

    from workbench import liveness
    from workbench.runner import run

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
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in params.items())
            log(f"[worker {worker}] trial {trial.number}: {shown}")
            pruner = TrialPruner(study, trial, spec, rule, settings.pruning)
            try:
                child = trial_spec(spec, params, study_name, trial.number)
                result = run(child, parent_run_id=parent_run_id, observers=[pruner],
                             progress=progress, log=log)
            except KeyboardInterrupt:
                if pruner.reason is None:
                    raise
                study.tell(trial, state=TrialState.PRUNED)
                told = True
                log(f"[worker {worker}] trial {trial.number}: PRUNED ({pruner.reason})")
                outcomes.append(TrialOutcome(trial.number, "PRUNED", _run_of(pruner), params,
                                             note=pruner.reason))
                continue
            except WorkbenchError as err:  # the run ended FAILED, or the trial's spec is invalid
                trial.set_user_attr("error", str(err)[:2000])
                study.tell(trial, state=TrialState.FAIL)
                told = True
                log(f"[worker {worker}] trial {trial.number}: FAIL ({err})")
                outcomes.append(TrialOutcome(trial.number, "FAIL", _run_of(pruner), params, note=str(err)))
                continue
            values = [float(result.objectives[n]) for n in names]
            frozen = study.tell(trial, values, skip_if_finished=True)
            told = True
            state = frozen.state.name  # a NaN value makes Optuna fail the trial
            log(f"[worker {worker}] trial {trial.number}: {state} "
                + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values)))
            outcomes.append(TrialOutcome(trial.number, state, result.run_id, params,
                                         dict(zip(names, values))))
        finally:
            if not told:  # interrupted (Ctrl-C, SIGTERM) or an unexpected error
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return outcomes


def _run_of(pruner: TrialPruner) -> str | None:
    return pruner.context.run_id if pruner.context is not None else None


# --------------------------------------------------------------------------- the search


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


def run_search(spec: RunSpec | dict, search: SearchSettings | Mapping[str, Any], *, trials: int,
               workers: int = 1, progress: bool = False, log=print,
               figure_path: str | Path | None = None, timeout_s: float | None = None) -> SearchResult:
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
        raise SpecError(f"search.pruning = {settings.pruning!r}: a worker process cannot import a "
                        "rule defined in a notebook cell or a script run directly; move it into a "
                        ".py file and name it module:function")

    from workbench import fronts, tracking
    from workbench.data.sources import load_rows
    from workbench.interrupts import SigtermRaisesInterrupt, StopRequests

    # Bad data fails here, before any run is created.
    load_rows(spec.data, spec.train.seed, row_kind=registry.METHODS[spec.method.name].row_kind)
    client = tracking.connect(spec.tracking.uri)
    storage = settings.storage or default_storage(client.tracking_uri)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    parent_spec = spec.updated(**{"tracking.run_name": spec.tracking.run_name or "search"})
    # As for a sweep's parent: signals only set a flag while the parent is created, then
    # SIGTERM raises KeyboardInterrupt like Ctrl-C, so the parent ends KILLED.
    with SigtermRaisesInterrupt():
        with StopRequests() as stop:
            parent_id = tracking.start_run(client, parent_spec,
                                           extra_tags={"workbench.kind": STUDY_KIND})
            recorder = tracking.RunRecorder(client, parent_id)
        with recorder as parent:
            if stop.is_set():
                raise KeyboardInterrupt
            study_name = settings.study or f"{spec.tracking.experiment}-{parent_id[:8]}"
            study = load_study(settings, open_storage(storage), study_name, spec, create=True)
            parent.set_tags({TAG_STUDY: study_name, "workbench.storage": shown_url(storage),
                             "workbench.sampler": settings.sampler,
                             "workbench.pruning": settings.pruning})
            parent.log_text(yaml.safe_dump({"search": settings.model_dump(mode="json", exclude={"storage"}),
                                            "trials": trials, "workers": workers}, sort_keys=False),
                            "search.yaml")
            try:
                if workers == 1:
                    run_trials(spec, settings, storage=storage, study_name=study_name,
                               parent_run_id=parent_id, trials=trials, progress=progress, log=log)
                else:
                    _run_workers(spec, settings, storage, study_name, parent_id, trials, workers,
                                 log, deadline)
            except BaseException:
                _end_open_children(client, spec, parent_id, "KILLED", None)
                fail_orphaned_trials(study)
                raise
            _end_open_children(client, spec, parent_id, "FAILED",
                               "its worker process exited without ending the run")
            fail_orphaned_trials(study)
            outcomes = study_outcomes(study, parent_id)
            counts = {s: sum(o.state == s for o in outcomes) for s in ("COMPLETE", "PRUNED", "FAIL")}
            parent.log_metrics({"study/trials": float(len(outcomes)),
                                "study/completed_trials": float(counts["COMPLETE"]),
                                "study/pruned_trials": float(counts["PRUNED"]),
                                "study/failed_trials": float(counts["FAIL"])}, step=0)
            names = [o.name for o in spec.objectives]
            children = fronts.sweep_children(client, parent_id)
            if not children:
                raise RunFailed(f"search {parent_id}: no trial finished ({counts['PRUNED']} pruned, "
                                f"{counts['FAIL']} failed); see the trials' runs")
            front = fronts.front_from_runs(children, names)
            base = fronts.start_point(client, children[0]["run_id"], names)
            base_hv = fronts.point_hypervolume(front, base)
            figure = fronts.record_front(parent, front, base_hv,
                                         f"Pareto front of the search ({spec.data.source})",
                                         prefix="study")
            saved = None
            if figure_path is not None:
                from workbench import plots

                saved = plots.write_html(figure, figure_path)
            return SearchResult(parent_id, study_name, shown_url(storage), outcomes, front, base,
                                base_hv, saved)


def study_outcomes(study, parent_run_id: str) -> list[TrialOutcome]:
    """The trials of ``study`` run under ``parent_run_id``, by number, read from the storage."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(PARENT_ATTR) != parent_run_id:
            continue
        values = dict(zip(study.user_attrs.get("objectives", []), t.values or []))
        note = t.user_attrs.get("pruned") if t.state.name == "PRUNED" else t.user_attrs.get("error")
        out.append(TrialOutcome(t.number, t.state.name, t.user_attrs.get(RUN_ATTR), dict(t.params),
                                values, note))
    return sorted(out, key=lambda o: o.number)


def _end_open_children(client, spec: RunSpec, parent_id: str, status: str, error: str | None) -> None:
    """Runs of this search still RUNNING once its workers are gone (killed hard, or stopped
    before their runner could end them) end ``status``: never left RUNNING."""
    from workbench import tracking

    for run in tracking.runs_frame(client, spec.tracking.experiment, parent_run_id=parent_id,
                                   status="RUNNING"):
        tracking.end_run(client, run["run_id"], status, error)


# --------------------------------------------------------------------------- worker processes


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen
    log_path: Path

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the worker's process group (its run ends KILLED, its trial FAIL), SIGKILL
        after ``grace_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.popen.poll() is not None:
                return
            try:
                os.killpg(self.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue


def _worker_env(spec: RunSpec, settings: SearchSettings, storage: str, workers: int,
                tracking_uri: str) -> dict[str, str]:
    from workbench.core_share import cores, user_threads
    from workbench.plugins import child_env, plugin_modules

    modules = plugin_modules(spec)
    if settings.pruning not in PRUNING_RULES:
        modules.append(registry.ref_module(settings.pruning))
    env = child_env(modules, dict(os.environ))
    env["MLFLOW_TRACKING_URI"] = tracking_uri  # the workers must write to the same store
    env[STORAGE_ENV] = storage
    if user_threads() is None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(max(1, cores() // workers))
    return env


def _run_workers(spec: RunSpec, settings: SearchSettings, storage: str, study_name: str,
                 parent_id: str, trials: int, workers: int, log, deadline: float | None) -> None:
    """``workers`` processes, each running its share of the trials; returns once all exit."""
    from workbench import tracking
    from workbench.interrupts import StopRequests

    folder = Path(tempfile.mkdtemp(prefix=f"workbench-search-{parent_id[:8]}-"))
    env = _worker_env(spec, settings, storage, workers, tracking.connect(spec.tracking.uri).tracking_uri)
    running: list[_Worker] = []
    with StopRequests() as stop:
        try:
            for index in range(workers):
                share = trials // workers + (index < trials % workers)
                job = folder / f"worker-{index}.json"
                job.write_text(json.dumps({
                    "spec": spec.to_yaml(), "settings": settings.model_dump(mode="json", exclude={"storage"}),
                    "study": study_name, "parent": parent_id, "trials": share, "worker": index,
                }), encoding="utf-8")
                log_path = folder / f"worker-{index}.log"
                with open(log_path, "wb") as out:
                    popen = subprocess.Popen([sys.executable, "-m", "workbench.search", str(job)],
                                             stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True, env=env)
                running.append(_Worker(index, popen, log_path))
                log(f"worker {index}: {share} trial(s), pid {popen.pid}, log {log_path}")
            while any(w.popen.poll() is None for w in running):
                if stop.is_set():
                    raise KeyboardInterrupt
                if deadline is not None and time.monotonic() > deadline:
                    raise RunFailed(f"search {parent_id} ran out of time; its workers were stopped")
                time.sleep(POLL_S)
        except BaseException:
            alive = [w for w in running if w.popen.poll() is None]
            if alive:
                log(f"stopping {len(alive)} worker(s) ...")
                # Side by side, so each gets the whole grace period to end its run.
                with ThreadPoolExecutor(max_workers=len(alive)) as pool:
                    list(pool.map(_Worker.stop, alive))
            raise
    for w in running:
        if w.popen.returncode != 0:
            log(f"worker {w.index} exited with code {w.popen.returncode}; see {w.log_path}")


def _worker_main(job_path: str) -> int:
    from workbench.plugins import import_plugins

    import_plugins()  # the user's methods, metrics, rewards and pruning rule
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    spec = RunSpec.from_yaml(job["spec"])
    settings = parse_settings({**job["settings"], "storage": os.environ[STORAGE_ENV]})
    try:
        run_trials(spec, settings, storage=settings.storage, study_name=job["study"],
                   parent_run_id=job["parent"], trials=job["trials"], worker=job["worker"],
                   log=lambda *a: print(*a, flush=True))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    raise SystemExit(_worker_main(sys.argv[1]))
