"""``train.reuse_freed_memory``: glibc serves a step's activation-sized blocks from the heap
and keeps them there when freed, so the next step reuses the same memory (no fresh pages to
fault in). Each case runs in a fresh interpreter: the thresholds are set once per process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is set"
)

# Allocates a 20 MiB block, frees it and allocates it again; reports where each lay against
# the program break (the heap's end) and whether the heap kept its size after the free.
PROBE = r"""
import ctypes, json, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = (ctypes.c_long,)
kept = None
if sys.argv[1] == "keep":
    from workbench.running.heap import keep_freed_memory
    kept = keep_freed_memory()
size = 20 * 1024 * 1024
first = libc.malloc(size)
ctypes.memset(first, 1, size)
break_with_block = libc.sbrk(0)
libc.free(first)
break_after_free = libc.sbrk(0)
second = libc.malloc(size)
print(json.dumps({
    "kept": kept,
    "in_heap": first < break_with_block and break_with_block - first < 2 * size,
    "heap_kept_its_size": break_after_free == break_with_block,
    "same_block_again": second == first,
}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_freed_blocks_stay_in_the_heap_and_are_reused():
    seen = probe("keep")
    assert seen == {
        "kept": True, "in_heap": True, "heap_kept_its_size": True, "same_block_again": True
    }, seen  # fmt: skip


def test_without_it_glibc_maps_such_a_block_outside_the_heap():
    """The default this changes: a fresh process's 20 MiB block is its own mmap, returned to
    the system when freed (its pages are faulted in again next time)."""
    seen = probe("default")
    assert seen["kept"] is None and not seen["in_heap"], seen


def test_runs_keep_freed_memory_by_default():
    from workbench.spec.run_spec import TrainSpec

    assert TrainSpec().reuse_freed_memory is True
