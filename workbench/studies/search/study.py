"""The Optuna study a search's workers share: its storage, sampler and trials.

The storage is an RDB one (a sqlite file next to a local MLflow store by default, or any
SQLAlchemy URL such as a PostgreSQL one); each worker loads the study with its own sampler
seed. The trials are read back from the storage (:func:`study_outcomes`), and trials whose
worker process died on this host are ended FAIL (:func:`fail_orphaned_trials`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.spec.errors import SpecError, WorkbenchError
from workbench.spec.mlflow_names import HOST_TAG, PID_TAG, START_TAG
from workbench.spec.run_spec import RunSpec
from workbench.studies.search.pruning import RUN_ATTR
from workbench.studies.search.space import SearchSettings

# Trial user attributes: the study's parent run, the worker process training the trial.
PARENT_ATTR = "mlflow_parent_run_id"
PROCESS_ATTR = "worker_process"


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` next to a local sqlite MLflow store, else in the local store folder."""
    from workbench.spec import paths

    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri[len("sqlite:///") :]).parent
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
        raise SpecError(
            f"search.storage = {url!r}: not a database URL; e.g. "
            "sqlite:///optuna.db or postgresql+psycopg2://user@host/db"
        ) from None


def open_storage(url: str):
    """Optuna's RDB storage; sqlite waits for a lock instead of failing while another
    worker writes. A missing database driver, or a server that refuses the connection, is a
    WorkbenchError naming the URL (password masked) and what to check."""
    import optuna
    from sqlalchemy.exc import OperationalError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ModuleNotFoundError as err:
        raise SpecError(
            f"search.storage = {shown_url(url)!r}: its database driver {err.name!r} is "
            "not installed (for PostgreSQL: pip install -e '.[board]')"
        ) from None
    except OperationalError as err:
        reason = (str(err.orig).strip().splitlines() or ["refused"])[0]
        raise WorkbenchError(
            f"cannot open the Optuna storage {shown_url(url)}: {reason}; is the "
            "database server running, and its password in PGPASSWORD or a "
            "PGPASSFILE?"
        ) from None


def make_sampler(settings: SearchSettings, worker: int = 0):
    import optuna

    seed = settings.seed + worker
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=settings.startup_trials)
    return optuna.samplers.NSGAIISampler(population_size=settings.population_size, seed=seed)


def load_study(
    settings: SearchSettings,
    storage,
    study_name: str,
    spec: RunSpec,
    worker: int = 0,
    create: bool = False,
):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize" if o.direction == "min" else "maximize" for o in spec.objectives]
    if create:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=directions,
            sampler=make_sampler(settings, worker),
            load_if_exists=True,
        )
        names = study.user_attrs.get("objectives")
        wanted = [o.name for o in spec.objectives]
        if [d.name.lower() for d in study.directions] != directions or names not in (None, wanted):
            raise SpecError(
                f"search.study = {study_name!r}: the stored study optimises {names} "
                f"({[d.name.lower() for d in study.directions]}), this spec {wanted} "
                f"({directions}); name another study"
            )
        study.set_user_attr("objectives", wanted)
        return study
    return optuna.load_study(
        storage=storage, study_name=study_name, sampler=make_sampler(settings, worker)
    )


def fail_orphaned_trials(study) -> list[int]:
    """End FAIL the RUNNING trials whose worker process on this host is gone (killed hard),
    so none stays RUNNING; trials of other hosts are left to their workers."""
    from optuna.trial import TrialState

    from workbench.running import liveness

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        process = t.user_attrs.get(PROCESS_ATTR)
        if not process or process.get(HOST_TAG) != liveness.this_host():
            continue
        if not liveness.process_alive(int(process[PID_TAG]), process[START_TAG]):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


@dataclass
class TrialOutcome:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL (RUNNING only while a worker trains it)
    run_id: str | None
    params: dict[str, Any]
    values: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # the prune reason or the error


def study_outcomes(study, parent_run_id: str) -> list[TrialOutcome]:
    """The trials of ``study`` run under ``parent_run_id``, by number, read from the storage."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(PARENT_ATTR) != parent_run_id:
            continue
        values = dict(zip(study.user_attrs.get("objectives", []), t.values or []))
        note = t.user_attrs.get("pruned") if t.state.name == "PRUNED" else t.user_attrs.get("error")
        out.append(
            TrialOutcome(
                t.number, t.state.name, t.user_attrs.get(RUN_ATTR), dict(t.params), values, note
            )
        )
    return sorted(out, key=lambda o: o.number)
