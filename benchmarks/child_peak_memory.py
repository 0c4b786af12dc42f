"""Run a benchmark child process and read its peak resident memory from outside it.

The kernel keeps, per process, the high-water mark of its resident memory; when the parent
reaps a child with ``wait4`` it gets that child's own resource usage, whose ``ru_maxrss`` is
the child's peak over its whole life (and that of any children it waited for). Read that way
the figure is taken identically for every child whatever library runs inside it, provided
nothing inside resets the mark (``/proc/self/clear_refs``): a child that does so hides the
peak it reached before the reset, so the benchmarks that compare peaks keep their children
from resetting it (see ``workbench_child``). ``resource.getrusage(RUSAGE_CHILDREN)`` would
give the largest peak of all the children reaped so far, not this one's.

Shared by the benchmark scripts, which run as ``python benchmarks/<name>.py`` and so import
this by its bare name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # the child's lifetime high-water resident memory, MiB


def run_child_process(command: list[str], env: dict[str, str]) -> ChildRun:
    """Run ``command`` to its end; its output and its lifetime peak resident memory."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        # Reaped here, so Popen must not wait for it again.
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    # ru_maxrss: KiB on Linux, bytes on macOS.
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return ChildRun(process.returncode, stdout, stderr, usage.ru_maxrss / scale)
