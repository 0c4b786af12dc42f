"""benchmarks/sft_step_profile.py --quick profiles a LoRA SFT step and ends with its BENCH
line; the families it reports account for the profiled step."""

from __future__ import annotations

import re

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


def test_quick_sft_step_profile_prints_its_families_and_headline():
    result = run_script("--quick", script="benchmarks/sft_step_profile.py", timeout=600)
    lines = result.stdout.strip().splitlines()
    families = {
        m.group(1).strip(): float(m.group(2))
        for m in (re.match(r"^([a-z][a-z ]+?)\s+([0-9.]+)\s+[0-9.]+%$", line) for line in lines)
        if m
    }
    assert {"matmul", "attention", "loss head", "optimizer"} <= set(families), result.stdout
    total = float(next(line.split()[-1] for line in lines if line.startswith("(profiled ops")))
    assert abs(sum(families.values()) - total) <= 0.002 * len(families), (families, total)
    bench = BENCH_LINE.match(lines[-1])
    assert bench and bench.group(1) == "sft_step_over_matmul_bound", lines[-1]
    assert bench.group(4) == "<=1.5" and float(bench.group(2)) > 1.0
