"""Runs side by side share the cores: each launched run takes its share as torch threads.

Torch starts as many threads as there are cores in every process; two runs at once on two
cores then spin against each other (measured: 18.6 s per 100-step run against 12.6 s with
one thread each). A launched run that was given no thread count (no ``OMP_NUM_THREADS``
from the user, no ``threads`` from its caller) takes ``max(1, cores // runs)``, where
``runs`` counts the store's RUNNING runs whose process is alive on this host (itself
included), and sets ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``torch.set_num_threads``.
While it trains it looks again every few seconds and lowers its share when more runs have
started (never raises it: a share taken back when a neighbour ends would oversubscribe the
cores again whenever the next run starts). The count it uses is the tag ``workbench.threads``.
"""

from __future__ import annotations

import os
import time

from workbench.running import liveness
from workbench.running.events import RunObserver
from workbench.spec.mlflow_names import HOST_TAG, PID_TAG, START_TAG, THREADS_TAG

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def live_runs_on_this_host(client) -> list[str]:
    """Ids of the store's RUNNING runs whose training process is alive on this host."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    host = liveness.this_host()
    alive = []
    for run in client.search_runs(
        experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = run.data.tags
        if (
            tags.get(HOST_TAG) == host
            and PID_TAG in tags
            and liveness.process_alive(int(tags[PID_TAG]), tags[START_TAG])
        ):
            alive.append(run.info.run_id)
    return alive


def share(client, run_id: str) -> int:
    """This run's share of the cores: ``max(1, cores // live runs)``, itself counted."""
    runs = set(live_runs_on_this_host(client)) | {run_id}
    return max(1, cores() // len(runs))


def user_threads() -> int | None:
    """The thread count the user (or the run's caller) set, if any."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def set_threads(count: int) -> None:
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)  # for the processes this run starts (data workers, ranks)
    import torch

    torch.set_num_threads(count)


class CoreShare(RunObserver):
    """Takes this launched run's share of the cores now, and lowers it when more runs start.

    With threads set by the user or the caller, it applies that count and leaves it alone.
    """

    def __init__(self, client, run_id: str, recheck_s: float = 3.0):
        self.client, self.run_id, self.recheck_s = client, run_id, recheck_s
        given = user_threads()
        self.fixed = given is not None
        self.threads = given if self.fixed else share(client, run_id)
        set_threads(self.threads)
        client.set_tag(run_id, THREADS_TAG, str(self.threads))
        self.checked = time.monotonic()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.fixed or time.monotonic() - self.checked < self.recheck_s:
            return
        self.checked = time.monotonic()
        now = share(self.client, self.run_id)
        if now < self.threads:
            self.threads = now
            set_threads(now)
            self.client.set_tag(self.run_id, THREADS_TAG, str(now))
