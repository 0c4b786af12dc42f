"""A search's worker processes: each runs its share of the trials (:func:`run_trials`).

The workers are started as ``python -m workbench.studies.search JOB.json`` in their own process
groups, with the storage URL in the environment (it may hold credentials, so it is never
written to a file or a run); Ctrl-C, SIGTERM or the search's deadline stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workbench.running import allocator
from workbench.running.signals import StopRequests
from workbench.spec import registry
from workbench.spec.errors import RunFailed
from workbench.spec.run_spec import RunSpec
from workbench.studies.search.pruning import PRUNING_RULES
from workbench.studies.search.space import SearchSettings, parse_settings
from workbench.studies.search.trials import run_trials

# The environment variable that hands workers the storage URL (it may hold credentials,
# so it is never written to a file or a run).
STORAGE_ENV = "WORKBENCH_SEARCH_STORAGE"
POLL_S = 0.5


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


def _worker_env(
    spec: RunSpec, settings: SearchSettings, storage: str, workers: int, tracking_uri: str
) -> dict[str, str]:
    from workbench.running.core_share import cores, user_threads
    from workbench.spec.plugins import child_env, plugin_modules

    modules = plugin_modules(spec)
    if settings.pruning not in PRUNING_RULES:
        modules.append(registry.ref_module(settings.pruning))
    env = allocator.preload_environment(child_env(modules, dict(os.environ)))
    env["MLFLOW_TRACKING_URI"] = tracking_uri  # the workers must write to the same store
    env[STORAGE_ENV] = storage
    if user_threads() is None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(max(1, cores() // workers))
    return env


def run_workers(
    spec: RunSpec,
    settings: SearchSettings,
    storage: str,
    study_name: str,
    parent_id: str,
    trials: int,
    workers: int,
    log,
    deadline: float | None,
) -> None:
    """``workers`` processes, each running its share of the trials; returns once all exit."""
    from workbench import tracking

    folder = Path(tempfile.mkdtemp(prefix=f"workbench-search-{parent_id[:8]}-"))
    env = _worker_env(
        spec, settings, storage, workers, tracking.connect(spec.tracking.uri).tracking_uri
    )
    running: list[_Worker] = []
    with StopRequests() as stop:
        try:
            for index in range(workers):
                share = trials // workers + (index < trials % workers)
                job = folder / f"worker-{index}.json"
                job.write_text(
                    json.dumps(
                        {
                            "spec": spec.to_yaml(),
                            "settings": settings.model_dump(mode="json", exclude={"storage"}),
                            "study": study_name,
                            "parent": parent_id,
                            "trials": share,
                            "worker": index,
                        }
                    ),
                    encoding="utf-8",
                )
                log_path = folder / f"worker-{index}.log"
                with open(log_path, "wb") as out:
                    popen = subprocess.Popen(
                        [sys.executable, "-m", "workbench.studies.search", str(job)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                        env=env,
                    )
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


def worker_main(job_path: str) -> int:
    from workbench.spec.plugins import import_plugins

    import_plugins()  # the user's methods, metrics, rewards and pruning rule
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    spec = RunSpec.from_yaml(job["spec"])
    settings = parse_settings({**job["settings"], "storage": os.environ[STORAGE_ENV]})
    try:
        run_trials(
            spec,
            settings,
            storage=settings.storage,
            study_name=job["study"],
            parent_run_id=job["parent"],
            trials=job["trials"],
            worker=job["worker"],
            log=lambda *a: print(*a, flush=True),
        )
    except KeyboardInterrupt:
        return 130
    return 0
