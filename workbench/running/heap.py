"""Keep the memory a training step frees in the process's heap, so the next step reuses it.

A CPU training step allocates and frees tensors of the same sizes every step (activations,
their gradients, the temporaries of every elementwise op). glibc's malloc serves a block
above its mmap threshold (128 KiB at first, raised as such blocks are freed, at most 32 MiB)
with a fresh ``mmap`` and returns it with ``munmap`` when freed, and it hands the heap's free
top back to the system above its trim threshold. Every such block's pages are then
zero-filled by the kernel again on first touch, one page fault per 4 KiB, and the
elementwise ops that write them pay for it.

:func:`keep_freed_memory` sets the mmap threshold to its largest value (blocks up to 32 MiB
come from the heap) and the trim threshold to 2 GiB (freed heap memory stays for reuse).
Measured (BENCHMARKS.md, train options): 2-5% off a LoRA SFT step on a CPU (3% at
SmolLM2-135M's shape, 5% at a small one), with the training peak within 2% either way. The
cost: the process's resident memory stays near its peak instead of shrinking after it,
which a training process, whose peak is what it must fit in, does not notice.

``mallopt`` is glibc's; on other C libraries (musl, macOS, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# mallopt takes an int; 2 GiB less one byte is the largest trim threshold it can be given.
TRIM_THRESHOLD_BYTES = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True where they were set, False where this C
    library has no ``mallopt`` or refused the values."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success and 0 when it refuses a value.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
