"""benchmarks/kernels.py --quick runs end to end and ends with parseable BENCH lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH_LINE = re.compile(r"^BENCH (\S+) (-?\d+(?:\.\d+)?) (\S+) target=(\S+)$")
REQUIRED = [
    "fused_ce_peak_mem_ratio",
    "fused_ce_time_ratio",
    "fused_logprobs_peak_mem_ratio",
    "fused_logprobs_time_ratio",
    "fused_ce_small_time_ratio",
    "fused_logprobs_small_time_ratio",
]


def run_script(*args: str, triton_interpret: bool = False) -> subprocess.CompletedProcess:
    """``python benchmarks/kernels.py ARGS`` from the repository root; asserts it exits 0."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_interpret:
        env["TRITON_INTERPRET"] = "1"
    result = subprocess.run([sys.executable, "benchmarks/kernels.py", *args], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_quick_benchmark_prints_the_headline_figures():
    result = run_script("--quick")
    lines = result.stdout.strip().splitlines()
    assert "CPU, float32" in result.stdout and "naive" in result.stdout
    tail = lines[-len(REQUIRED) :]
    parsed = [BENCH_LINE.match(line) for line in tail]
    assert all(parsed), tail
    assert [m.group(1) for m in parsed] == REQUIRED
    for match in parsed:
        value = float(match.group(2))
        assert value > 0 and value == value, match.group(0)  # positive, not NaN
        assert match.group(3) == "x" and match.group(4).startswith("<=")


def test_the_liger_comparison_runs_where_triton_can():
    """The GPU-only comparison with Liger-Kernel, run through Triton's interpreter on CPU at a
    tiny size: the worker calls Liger's loss the way a GPU run will."""
    spec = {"op": "ce", "impl": "liger", "shape": [32, 16, 300], "device": "cpu", "repeats": 1,
            "calls": 1, "threads": 1, "size": "small"}
    result = run_script("--worker", json.dumps(spec), triton_interpret=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(measured["times"]) == 1 and measured["times"][0] > 0
