"""Dead-run detection: runs whose process is gone, or whose heartbeat went stale, end FAILED.

A run cannot mark itself when its process is SIGKILLed or its machine goes away. Every
training process tags its run with its pid, a mark of when the process started (so a recycled
pid is not mistaken for it) and its host, and its recorder refreshes a heartbeat tag.
:func:`reap_dead_runs` (called by the CLI, the runner and the widgets whenever they list runs)
ends such runs FAILED with the reason, so no run stays RUNNING forever.

A run is declared dead only when its process is gone for certain: the pid names no process,
names a zombie, or names a process that started at another moment. The start mark is the
kernel's start time in clock ticks since boot (Linux), which no clock change moves. A wall-clock
start time is not enough there: Linux derives it from the boot time, a whole second that can
flip by one between two readings when the clock is adjusted, and a live run was once declared
dead that way. Any doubt (a probe that cannot read the process) counts as alive. A run whose
process outlives a verdict takes the verdict back itself (``DECLARED_DEAD_TAG``, see
:mod:`workbench.tracking.recorder`).
"""

from __future__ import annotations

import os
import socket
import sys
import time

import psutil

from workbench import tracking
from workbench.spec.mlflow_names import HEARTBEAT_TAG, HOST_TAG, PID_TAG, START_TAG

# A heartbeat is written every few seconds while a run trains; a run silent this long on
# another host (where its process cannot be checked) is taken as dead.
STALE_AFTER_S = 120.0
# Start marks written by earlier versions are wall-clock creation times; they are compared
# with this tolerance, wide enough for the boot time's one-second flips and far narrower than
# the time the kernel takes to hand a freed pid to a new process.
WALL_CLOCK_TOLERANCE_S = 5.0
TICKS_PREFIX = "ticks:"


def this_host() -> str:
    return socket.gethostname()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> int:
    """The process's start in clock ticks since boot (``/proc/PID/stat``, field 22)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def process_start(pid: int) -> str:
    """A mark of when ``pid``'s process started that names it and no later process with the
    same pid: on Linux, the boot's id and the start in clock ticks since boot; elsewhere the
    creation time (macOS and Windows record it once, in wall-clock seconds)."""
    if sys.platform.startswith("linux"):
        try:
            return f"{TICKS_PREFIX}{_boot_id()}:{_start_ticks(pid)}"
        except (OSError, ValueError, IndexError):
            pass
    return repr(psutil.Process(pid).create_time())


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Tags that identify the process training a run."""
    pid = os.getpid() if pid is None else pid
    return {PID_TAG: str(pid), START_TAG: process_start(pid), HOST_TAG: this_host()}


def process_alive(pid: int, start: str | float) -> bool:
    """False only when ``pid``'s process started at ``start`` (a :func:`process_start` mark) is
    gone for certain: no such pid, a zombie, or a process with another start. A probe that
    cannot tell (access denied, an unreadable mark) answers True."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True
    recorded = str(start)
    try:
        if recorded.startswith(TICKS_PREFIX):
            current = process_start(pid)
            if not current.startswith(TICKS_PREFIX):
                return True  # /proc unreadable now: no certainty either way
            return current == recorded
        return abs(proc.create_time() - float(recorded)) < WALL_CLOCK_TOLERANCE_S
    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
        return False
    except (psutil.Error, OSError, ValueError):
        return True


def death_reason(run, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a RUNNING run is dead, or None if it may still be alive."""
    now = time.time() if now is None else now
    tags = run.data.tags
    if PID_TAG in tags and START_TAG in tags and tags.get(HOST_TAG) == this_host():
        pid = int(tags[PID_TAG])
        if not process_alive(pid, tags[START_TAG]):
            return (
                f"its process {pid} on {this_host()} is gone (killed or crashed) without ending "
                "the run; `workbench resume RUN_ID` continues it from its last checkpoint, if any"
            )
        return None
    beat = float(tags[HEARTBEAT_TAG]) if HEARTBEAT_TAG in tags else run.info.start_time / 1000.0
    if now - beat > stale_after_s:
        where = tags.get(HOST_TAG, "an unknown host")
        return (
            f"no heartbeat for {now - beat:.0f} s from its process on {where} (the process or "
            "its machine went away)"
        )
    return None


def reap_dead_runs(
    client, experiment_ids: list[str] | None = None, stale_after_s: float = STALE_AFTER_S
) -> list[str]:
    """End every dead RUNNING run FAILED with the reason; return their ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    reaped = []
    for run in client.search_runs(
        experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000
    ):
        reason = death_reason(run, stale_after_s=stale_after_s)
        if reason is not None:
            tracking.declare_dead(client, run.info.run_id, f"the run died: {reason}")
            reaped.append(run.info.run_id)
    return reaped
