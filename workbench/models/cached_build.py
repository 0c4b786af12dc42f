"""One build per cache entry, shared by every process that needs it.

A built-in base is made once (pretrained, or converted from a packaged file) and cached as a
folder. Concurrent processes (a class launching runs at once on an empty cache) take a file
lock beside the entry; the first builds, the others wait and show its progress lines, then
load what it built. The build writes into a temporary folder beside the entry and renames it
into place, so an interrupted build never leaves a half-written cache (and the lock dies with
its process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

# How often a process waiting for another's build says what that build is doing.
WAIT_REPORT_EVERY_S = 10.0


def is_built(target: Path, marker: str) -> bool:
    """Whether ``target`` holds a finished build (its marker file is written last)."""
    return (target / marker).is_file()


def build_once(
    target: Path,
    marker: str,
    build: Callable[[Path, Callable[[str], None]], None],
    *,
    what: str,
    log: Callable[[str], None] = print,
) -> Path:
    """``target``, built by ``build(folder, say)`` unless it is already there.

    ``build`` writes the entry into ``folder`` (``marker`` last) and reports progress through
    ``say``, which also feeds processes waiting on the lock. ``what`` names the entry in the
    waiting message ("the tiny base").
    """
    if is_built(target, marker):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target, what, log):
        if is_built(target, marker):  # built by the process we waited for
            return target
        progress_path = _progress_file(target)
        progress_path.write_text("", encoding="utf-8")

        def say(line: str) -> None:
            log(line)
            with progress_path.open("a", encoding="utf-8") as f:
                f.write(line.strip() + "\n")

        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            build(tmp, say)
            try:
                os.replace(tmp, target)
            except OSError:
                # Built meanwhile by a process that did not take the lock (an older version).
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            progress_path.unlink(missing_ok=True)
    return target


def _progress_file(target: Path) -> Path:
    return target.with_name(target.name + ".progress")


@contextmanager
def _build_lock(target: Path, what: str, log):
    """Holds the entry's build lock; while another process holds it, reports that process's
    progress lines (its ``.progress`` file) as they change."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(target.with_name(target.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        started = time.monotonic()
        log(f"Waiting for another process that is building {what} (cached in {target}) ...")
        shown = None
        while True:
            try:
                lock.acquire(timeout=WAIT_REPORT_EVERY_S)
                break
            except Timeout:
                line = _last_progress(target)
                if line != shown and line:
                    log(f"  (the other build) {line}")
                    shown = line
                else:
                    log(f"  still waiting for the other build ({time.monotonic() - started:.0f} s)")
        log(f"  the other build ended after {time.monotonic() - started:.0f} s of waiting")
    try:
        yield
    finally:
        lock.release()


def _last_progress(target: Path) -> str | None:
    try:
        lines = _progress_file(target).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return lines[-1].strip() if lines else None
