"""benchmarks/sft_step_profile.py --quick profiles a LoRA SFT step, the workbench's or TRL's
SFTTrainer's, and ends with its BENCH line; the families it reports account for the profiled
step."""

from __future__ import annotations

import re

import pytest

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


@pytest.mark.parametrize(
    ("side", "headline", "target"),
    [("workbench", "sft_step_over_matmul_bound", "<=1.5"),
     ("trl", "sft_step_over_matmul_bound_trl", "-")],
)  # fmt: skip
def test_quick_sft_step_profile_prints_its_families_and_headline(side, headline, target):
    if side == "trl":
        pytest.importorskip("trl")
    result = run_script(
        "--quick", "--side", side, script="benchmarks/sft_step_profile.py", timeout=600
    )
    lines = result.stdout.strip().splitlines()
    assert f"({side}, 32-true)" in lines[0], lines[0]
    families = {
        m.group(1).strip(): float(m.group(2))
        for m in (re.match(r"^([a-z][a-z ]+?)\s+([0-9.]+)\s+[0-9.]+%$", line) for line in lines)
        if m
    }
    assert {"matmul", "attention", "optimizer"} <= set(families), result.stdout
    total = float(next(line.split()[-1] for line in lines if line.startswith("(profiled ops")))
    assert abs(sum(families.values()) - total) <= 0.002 * len(families), (families, total)
    # Each family's largest ops are named.
    assert re.search(r"^  matmul: aten::mm [0-9.]+ s", result.stdout, re.M), result.stdout
    bench = BENCH_LINE.match(lines[-1])
    assert bench and bench.group(1) == headline, lines[-1]
    assert bench.group(4) == target and float(bench.group(2)) > 1.0
