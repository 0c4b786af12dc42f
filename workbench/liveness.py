"""Dead-run detection: runs whose process is gone, or whose heartbeat went stale, end FAILED.

A run cannot mark itself when its process is SIGKILLed or its machine goes away. Every
training process tags its run with its pid, the process start time (so a recycled pid is not
mistaken for it) and its host, and its recorder refreshes a heartbeat tag. :func:`reap_dead_runs`
(called by the CLI, the runner and the widgets whenever they list runs) ends such runs FAILED
with the reason, so no run stays RUNNING forever.
"""

from __future__ import annotations

import os
import socket
import time

import psutil

from workbench import tracking

PID_TAG = "workbench.pid"
START_TAG = "workbench.process_start"
HOST_TAG = "workbench.host"
HEARTBEAT_TAG = tracking.HEARTBEAT_TAG
# A heartbeat is written every few seconds while a run trains; a run silent this long on
# another host (where its process cannot be checked) is taken as dead.
STALE_AFTER_S = 120.0


def this_host() -> str:
    return socket.gethostname()


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags that identify the process training a run."""
    pid = os.getpid() if pid is None else pid
    return {PID_TAG: str(pid), START_TAG: repr(psutil.Process(pid).create_time()), HOST_TAG: this_host()}


def process_alive(pid: int, process_start: float) -> bool:
    """True if ``pid`` is running and is the same process (same start time), not a zombie."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - process_start) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def death_reason(run, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a RUNNING run is dead, or None if it may still be alive."""
    now = time.time() if now is None else now
    tags = run.data.tags
    if PID_TAG in tags and START_TAG in tags and tags.get(HOST_TAG) == this_host():
        pid = int(tags[PID_TAG])
        if not process_alive(pid, float(tags[START_TAG])):
            return (f"its process {pid} on {this_host()} is gone (killed or crashed) without ending "
                    "the run; `workbench resume RUN_ID` continues it from its last checkpoint, if any")
        return None
    beat = float(tags[HEARTBEAT_TAG]) if HEARTBEAT_TAG in tags else run.info.start_time / 1000.0
    if now - beat > stale_after_s:
        where = tags.get(HOST_TAG, "an unknown host")
        return (f"no heartbeat for {now - beat:.0f} s from its process on {where} (the process or "
                "its machine went away)")
    return None


def reap_dead_runs(client, experiment_ids: list[str] | None = None,
                   stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """End every dead RUNNING run FAILED with the reason; return their ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    reaped = []
    for run in client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        reason = death_reason(run, stale_after_s=stale_after_s)
        if reason is not None:
            tracking.end_run(client, run.info.run_id, "FAILED", f"the run died: {reason}")
            reaped.append(run.info.run_id)
    return reaped
