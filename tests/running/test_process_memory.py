"""perf/peak_mem_mb measures the stretch it marks: a larger peak from before the mark (a
model load, the reference precompute) does not hide the stretch's own."""

from __future__ import annotations

import mmap
import sys

import pytest

from workbench.running.process_memory import MemoryMark, lifetime_peak_rss_mb

MIB = 1024 * 1024


def touch_mib(mib: int) -> None:
    """Map ``mib`` MiB, write every page (so it is resident), unmap it.

    An anonymous mapping of its own, not a tensor: the allocator behind a tensor may keep a
    freed block resident for reuse (which allocator and which thresholds depend on what the
    process loaded before), and then the stretch's pages would reuse the earlier peak's.
    """
    with mmap.mmap(-1, mib * MIB) as block:
        for offset in range(0, mib * MIB, mmap.PAGESIZE):
            block[offset] = 1


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the peak reset is Linux's /proc/self/clear_refs"
)
def test_a_peak_before_the_mark_does_not_hide_the_stretch_peak():
    touch_mib(400)  # an earlier peak, above the stretch's
    before = lifetime_peak_rss_mb()
    mark = MemoryMark()
    assert mark.resettable, (
        "this Linux machine should allow resetting the peak (/proc/self/clear_refs)"
    )
    touch_mib(120)
    measured = mark.peak_above_mb()
    # The process's lifetime peak did not move, so the old difference would have read ~0.
    assert lifetime_peak_rss_mb() - before < 60
    assert 100 <= measured <= 200, measured


def test_a_stretch_that_allocates_nothing_reads_near_zero():
    mark = MemoryMark()
    assert mark.peak_above_mb() < 20
