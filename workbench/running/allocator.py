"""Which ``malloc`` a training process runs on: mimalloc where it is installed (Linux; the
``cmeel-mimalloc`` wheel, a dependency there), the C library's otherwise.

Why: a CPU training step frees and allocates the same activation-sized blocks every step,
while a few blocks outlive each step (gradients, optimizer state, logged values). glibc's
heap puts the survivors in the holes the activations left and can no longer fit the next
step's activations between them: at SmolLM2-135M's shape a LoRA SFT step held 3.3 GiB of
memory for 2.2 GiB of live blocks (BENCHMARKS.md, "Where the DPO peak went"). mimalloc
keeps blocks of different sizes in different pages, so the survivors do not cut the freed
space up: the same step peaked at 2.2 GiB, and ran faster.

A process cannot change its ``malloc`` once it runs: the library must be loaded first, with
``LD_PRELOAD``. So the workbench starts its training processes on it: launched runs, study
and search processes (:func:`preload_environment` builds their environment) and the
``workbench`` commands that train in their own process (:func:`restart_on_mimalloc` starts
the command again on it, once, before anything is imported). A notebook kernel keeps the
allocator it started with; ``workbench.launch`` from a notebook gives the run mimalloc.

``WORKBENCH_ALLOCATOR=system`` keeps the C library's ``malloc`` everywhere;
``WORKBENCH_ALLOCATOR=mimalloc`` (the default) asks for mimalloc and falls back to the C
library's, silently, where it is not installed or not Linux. A run records which one it ran
on (tag ``workbench.allocator``).

The process that mimalloc was preloaded into takes ``LD_PRELOAD`` back to what it was
(:func:`forget_preload`, on importing ``workbench``), so the programs it starts in turn
(a tracking server, a browser, a compiler) run on their usual allocator.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from importlib import metadata
from pathlib import Path

from workbench.spec.errors import SpecError

ALLOCATOR_ENV = "WORKBENCH_ALLOCATOR"
CHOICES = ("mimalloc", "system")
PRELOAD_ENV = "LD_PRELOAD"
# LD_PRELOAD as it was before the workbench put mimalloc in front of it; present only in a
# process the workbench started on mimalloc, until that process imports workbench.
PRELOAD_BEFORE_ENV = "WORKBENCH_PRELOAD_BEFORE"
MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
# mimalloc's own variable for its purge delay, read when it starts.
PURGE_DELAY_ENV = "MIMALLOC_PURGE_DELAY"

# mimalloc's option number for the delay before freed memory goes back to the system
# (mi_option_purge_delay in mimalloc.h: the same number in mimalloc 2 and 3, whose option
# list only ever grows at its end).
_MI_OPTION_PURGE_DELAY = 15
# Keep freed memory for reuse (never purge), or give it back at once.
KEEP_PURGE_DELAY = -1
RETURN_PURGE_DELAY = 0

# Set when this process was started on mimalloc by the workbench (forget_preload saw the
# marker): a second restart is never tried, whatever the outcome of the first.
_started_by_workbench = False


def wanted(environ=os.environ) -> bool:
    """Whether ``environ`` asks for mimalloc (the default); a SpecError names a wrong value."""
    value = environ.get(ALLOCATOR_ENV, "mimalloc").strip().lower() or "mimalloc"
    if value not in CHOICES:
        raise SpecError(
            f"{ALLOCATOR_ENV}={environ[ALLOCATOR_ENV]!r} is not an allocator; "
            f"set it to one of {', '.join(CHOICES)} (or unset it for mimalloc)"
        )
    return value == "mimalloc"


@functools.cache
def mimalloc_library() -> Path | None:
    """The installed ``libmimalloc.so`` (from the cmeel-mimalloc wheel), None where it is
    not installed or this is not Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.files(MIMALLOC_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libmimalloc.so":
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    return None


def preload_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a training process: with mimalloc preloaded where :func:`wanted` and
    installed, unchanged otherwise."""
    env = dict(env)
    library = mimalloc_library() if wanted(env) else None
    before = env.get(PRELOAD_ENV, "")
    if library is None or str(library) in before.replace(":", " ").split():
        return env
    env[PRELOAD_ENV] = f"{library}:{before}" if before else str(library)
    env[PRELOAD_BEFORE_ENV] = before
    # Freed memory kept for reuse from the start: mimalloc's default gives it back after
    # 10 ms, and each step faults its pages in again (TRL's LoRA SFT at SmolLM2-135M's
    # shape: 103 tokens/s against 133, BENCHMARKS.md). A run then sets it as
    # train.reuse_freed_memory says.
    env.setdefault(PURGE_DELAY_ENV, str(KEEP_PURGE_DELAY))
    return env


def forget_preload(environ=os.environ) -> None:
    """In a process the workbench started on mimalloc: ``LD_PRELOAD`` back to what it was, so
    that this process's own children start on their usual allocator (the library stays
    loaded here)."""
    global _started_by_workbench
    if PRELOAD_BEFORE_ENV not in environ:
        return
    _started_by_workbench = True
    before = environ.pop(PRELOAD_BEFORE_ENV)
    if before:
        environ[PRELOAD_ENV] = before
    else:
        environ.pop(PRELOAD_ENV, None)


def restart_on_mimalloc(module: str, args: list[str]) -> None:
    """Replace this process with ``python -m module args`` on mimalloc, where it is wanted,
    installed and not already running; returns (doing nothing) otherwise, and always in a
    process the workbench already restarted."""
    if _started_by_workbench or running() != "system":
        return
    env = preload_environment(dict(os.environ))
    if PRELOAD_BEFORE_ENV not in env:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env)


def running() -> str:
    """The allocator of this process: ``mimalloc X.Y.Z`` or ``system``."""
    version = _mimalloc_function("mi_version", ctypes.c_int, ())
    if version is None:
        return "system"
    v = version()
    # mimalloc 3 numbers its versions major, minor, patch as 30403; mimalloc 2 as 217.
    digits = (
        (v // 10000, v // 100 % 100, v % 100) if v >= 10000 else (v // 100, v // 10 % 10, v % 10)
    )
    return "mimalloc " + ".".join(map(str, digits))


def set_purge(keep: bool) -> bool:
    """Under mimalloc: keep freed memory for reuse (``keep``) or give it back to the system at
    once. False where this process does not run on mimalloc."""
    option_set = _mimalloc_function("mi_option_set", None, (ctypes.c_int, ctypes.c_long))
    if option_set is None:
        return False
    option_set(_MI_OPTION_PURGE_DELAY, KEEP_PURGE_DELAY if keep else RETURN_PURGE_DELAY)
    return True


def purge_delay() -> int | None:
    """mimalloc's purge delay in milliseconds (-1: never), None where it is not running."""
    option_get = _mimalloc_function("mi_option_get", ctypes.c_long, (ctypes.c_int,))
    return None if option_get is None else option_get(_MI_OPTION_PURGE_DELAY)


def _mimalloc_function(name: str, restype, argtypes: tuple):
    """A function of the mimalloc this process runs on (found among the symbols loaded with
    the program, where a preloaded library's are), or None; None off Linux, where the
    workbench preloads nothing (and Windows has no such symbol table)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None
    function.restype, function.argtypes = restype, argtypes
    return function
