"""benchmarks/peak_breakdown.py --quick: a DPO run's peak under two allocator settings, glibc's
live and held memory at the forward's end, and the tensors autograd saved, by module."""

from __future__ import annotations

import re

from tests.kernels.test_benchmark_smoke import run_script


def test_quick_peak_breakdown_prints_each_setting_and_the_saved_tensors():
    result = run_script(
        "--quick", "--settings", "keep+thp,return", script="benchmarks/peak_breakdown.py",
        timeout=600,
    )  # fmt: skip
    rows = {
        m.group(1): [float(v) for v in m.group(2).split()]
        for m in (re.match(r"^(keep\+thp|return)\s+([0-9. ]+)$", line)
                  for line in result.stdout.splitlines())
        if m
    }  # fmt: skip
    assert set(rows) == {"keep+thp", "return"}, result.stdout
    for peak, live, held, waste, pieces, step_s in rows.values():
        assert peak > 0 and 0 < live <= held and abs(held - live - waste) <= 1, result.stdout
        assert pieces >= 1 and step_s > 0
    saved = {
        m.group(1): float(m.group(2))
        for m in (re.match(r"^  (\S+)\s+([0-9.]+) MiB\s+[0-9.]+%$", line)
                  for line in result.stdout.splitlines())
        if m
    }  # fmt: skip
    total = float(re.search(r"saved for backward .*: ([0-9.]+) MiB", result.stdout).group(1))
    # The decoder's parts saved what backward needs, and the parts add up to the total.
    assert {"LlamaMLP", "LlamaAttention"} <= set(saved), result.stdout
    assert abs(sum(saved.values()) - total) <= len(saved), (saved, total)
