"""``train.reuse_freed_memory``: true, glibc serves a step's activation-sized blocks from the
heap and keeps them there when freed, so the next step reuses the same memory (no fresh pages
to fault in); false, every such block is a mapping of its own, given back when freed, the
second time as the first (glibc left to itself would serve it from the heap from then on).
And importing workbench asks torch for transparent huge pages under its large blocks. Each
case runs in a fresh interpreter, whose allocator has not been set yet."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from workbench.running.heap import kernel_huge_pages_mode

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere nothing is set"
)

# Sets the policies named on the command line in turn (none: glibc's own), then allocates a
# 20 MiB block, frees it, and does so again; reports, for each of the two blocks, whether it
# lay in the heap (below the program break, the heap's end) and whether the free kept the
# heap's size, and whether the second block was the first one again.
PROBE = r"""
import ctypes, json, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = (ctypes.c_long,)
from workbench.running.heap import set_freed_memory_policy
taken = [set_freed_memory_policy(policy == "keep") for policy in sys.argv[1:]]
size = 20 * 1024 * 1024
blocks = []
for _ in range(2):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    end = libc.sbrk(0)
    libc.free(block)
    blocks.append({"in_heap": block < end and end - block < 2 * size,
                   "heap_kept_its_size": libc.sbrk(0) == end, "at": block})
print(json.dumps({"taken": taken, "blocks": [{k: v for k, v in b.items() if k != "at"}
                  for b in blocks], "same_block_again": blocks[0]["at"] == blocks[1]["at"]}))
"""


def probe(*policies: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *policies], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout)


KEPT = {"in_heap": True, "heap_kept_its_size": True}
RETURNED = {"in_heap": False, "heap_kept_its_size": True}


def test_kept_freed_blocks_stay_in_the_heap_and_are_reused():
    seen = probe("keep")
    assert seen == {"taken": [True], "blocks": [KEPT, KEPT], "same_block_again": True}, seen


def test_returned_blocks_are_mappings_of_their_own_every_time():
    """The second block too: glibc's own raising of its threshold is off."""
    seen = probe("return")
    assert seen["taken"] == [True] and seen["blocks"] == [RETURNED, RETURNED], seen


def test_glibc_alone_maps_the_first_block_and_keeps_the_second_in_the_heap():
    """What either policy replaces: the first free raises glibc's mmap threshold, and from
    then on blocks of that size come from the heap, which then fragments."""
    seen = probe()
    assert seen["blocks"] == [RETURNED, KEPT], seen


def test_a_later_run_sets_its_own_policy():
    """One process, two runs (a notebook): the second run's setting is the one in force."""
    assert probe("keep", "return")["blocks"] == [RETURNED, RETURNED]
    assert probe("return", "keep")["blocks"] == [KEPT, KEPT]


def test_runs_keep_freed_memory_by_default():
    from workbench.spec.run_spec import TrainSpec

    assert TrainSpec().reuse_freed_memory is True


# Imports workbench, then torch, and allocates a 256 MiB tensor; reports the variable torch
# read and how much of the process's anonymous memory is in transparent huge pages.
HUGE_PAGES_PROBE = r"""
import json, os
import workbench
import torch
block = torch.ones(256 * 1024 * 1024, dtype=torch.uint8)
huge_kib = 0
with open("/proc/self/smaps_rollup") as smaps:
    for line in smaps:
        if line.startswith("AnonHugePages:"):
            huge_kib = int(line.split()[1])
print(json.dumps({"variable": os.environ.get("THP_MEM_ALLOC_ENABLE"), "huge_kib": huge_kib}))
"""


def huge_pages_probe(variable: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if variable is not None:
        env["THP_MEM_ALLOC_ENABLE"] = variable
    out = subprocess.run([sys.executable, "-c", HUGE_PAGES_PROBE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout)


def test_importing_workbench_first_gives_torchs_large_blocks_huge_pages():
    seen = huge_pages_probe(None)
    assert seen["variable"] == "1", seen
    if kernel_huge_pages_mode() in ("madvise", "always"):
        assert seen["huge_kib"] > 0, seen


def test_a_users_own_setting_is_kept():
    """THP_MEM_ALLOC_ENABLE=0 keeps torch's default: where the kernel gives huge pages only on
    request, the process then has none, so the request above was torch's, asked for by
    workbench."""
    seen = huge_pages_probe("0")
    assert seen["variable"] == "0", seen
    if kernel_huge_pages_mode() == "madvise":
        assert seen["huge_kib"] == 0, seen
