"""The process's memory allocators: what glibc's does with the memory a training step frees
(keep it for the next step, faster; or give it back to the system, a lower peak), and
whether torch's asks for huge pages.

A CPU training step allocates and frees tensors of the same sizes every step (activations,
their gradients, the temporaries of every elementwise op). glibc's malloc serves a block
above its mmap threshold (128 KiB at first) with a fresh ``mmap`` and returns it with
``munmap`` when freed: every such block's pages are zero-filled by the kernel again on first
touch, one page fault per 4 KiB, and the ops that write them pay for it. But the first free
of such a block raises the threshold to that block's size (up to 32 MiB), so from then on a
step's activations come from the heap, and the heap, which can only shrink from its top,
fragments: blocks that outlive a step (the optimizer's moments and step counters, made at
the first step; the gradients, made during each backward; small tensors kept for logging)
land in the holes the activations left and cut them into pieces the next step's
activations do not fit. At SmolLM2-135M's shape a full fine-tuning DPO step held 7.1 GiB of
heap for 5.9 GiB of live blocks, its free space in 2,625 pieces (BENCHMARKS.md, "Where
the DPO peak went").

:func:`keep_freed_memory` (``train.reuse_freed_memory: true``, the default) sets the mmap
threshold to its largest value (blocks up to 32 MiB come from the heap) and the trim
threshold to 2 GiB (freed heap memory stays for reuse): no page is faulted in twice, and the
heap fragments as above. :func:`return_freed_memory` (``false``) fixes the mmap threshold at
1 MiB: every activation-sized block is a mapping of its own, handed back when freed, so the
process holds what is live and little more, and each step faults all its pages in again.
Setting a threshold also turns glibc's own raising of it off. At that DPO shape ``false``
lowered the peak from 7.9 to 6.5 GiB and cost 23% of the speed (huge pages off, below). Each
run sets its policy (a later run in the same process sets its own).

Either way, torch's own allocator can ask the kernel for transparent huge pages (2 MiB) for
its blocks from 2 MiB up, where the kernel offers them on request (``madvise``, the common
setting): ``THP_MEM_ALLOC_ENABLE=1``, which torch reads once, at its first large allocation.
:func:`ask_torch_for_huge_pages` sets it unless it is set already; importing ``workbench``
calls it, so it counts in every process that imports ``workbench`` before torch allocates
(the command line, launched runs, search workers, a notebook that imports workbench first).
At that DPO shape, keeping freed memory, a step was 7% faster with it and the peak 15%
lower, 7.9 to 6.7 GiB (BENCHMARKS.md, "Where the DPO peak went"): one fault per 2 MiB
instead of 512, and 2 MiB-aligned blocks that leave the heap less shredded.
``THP_MEM_ALLOC_ENABLE=0`` keeps it off.

``mallopt`` is glibc's; on other C libraries (musl, macOS, Windows) nothing changes. A
process on mimalloc (the default for training processes on Linux:
:mod:`workbench.running.allocator`) does not fragment this way; there the policy sets
mimalloc's purge delay instead (keep: never give freed memory back; return: at once).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

from workbench.running import allocator

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Keeping: the largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX),
# and, as mallopt takes an int, the largest trim threshold it can be given (2 GiB less a byte).
KEEP_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
KEEP_TRIM_THRESHOLD_BYTES = 2**31 - 1
# Returning: blocks from 1 MiB up are mappings of their own (a decoder's activations are
# several MiB from a few hundred tokens on; the many small blocks stay in the heap), and the
# heap's free top goes back from glibc's default trim threshold, 128 KiB.
RETURN_MMAP_THRESHOLD_BYTES = 1024 * 1024
RETURN_TRIM_THRESHOLD_BYTES = 128 * 1024


# torch's switch for huge pages under its large CPU blocks (c10's CPU allocator).
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def ask_torch_for_huge_pages(environ=os.environ) -> None:
    """Turn torch's huge pages on in ``environ`` unless the variable is set already (to
    either value). Has effect only before torch's first large allocation."""
    environ.setdefault(HUGE_PAGES_VARIABLE, "1")


def kernel_huge_pages_mode() -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``), None
    where it does not say (not Linux)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.find("[") + 1 : text.find("]")] if "[" in text else None


def keep_freed_memory() -> bool:
    """Keep freed blocks in the heap for reuse; True where glibc took the thresholds, False
    where this C library has no ``mallopt`` or refused them."""
    return _set_thresholds(KEEP_MMAP_THRESHOLD_BYTES, KEEP_TRIM_THRESHOLD_BYTES)


def return_freed_memory() -> bool:
    """Give activation-sized blocks back to the system when freed; True where glibc took the
    thresholds, False where this C library has no ``mallopt`` or refused them."""
    return _set_thresholds(RETURN_MMAP_THRESHOLD_BYTES, RETURN_TRIM_THRESHOLD_BYTES)


def set_freed_memory_policy(reuse: bool) -> bool:
    """``train.reuse_freed_memory``: under mimalloc, its purge delay (never, or at once:
    :func:`workbench.running.allocator.set_purge`); under glibc, :func:`keep_freed_memory` or
    :func:`return_freed_memory`."""
    if allocator.set_purge(keep=reuse):
        return True
    return keep_freed_memory() if reuse else return_freed_memory()


def _set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success and 0 when it refuses a value.
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_bytes)
    )


@functools.cache
def _mallopt():
    """glibc's ``mallopt``, or None under another C library."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt
