"""benchmarks/kernels.py --quick runs end to end and ends with parseable BENCH lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT

BENCH_LINE = re.compile(r"^BENCH (\S+) (-?\d+(?:\.\d+)?) (\S+) target=(\S+)$")
REQUIRED = [
    "fused_ce_peak_mem_ratio",
    "fused_ce_time_ratio",
    "fused_logprobs_peak_mem_ratio",
    "fused_logprobs_time_ratio",
    "fused_ce_small_time_ratio",
    "fused_logprobs_small_time_ratio",
]


def run_script(
    *args: str,
    triton_interpret: bool = False,
    script: str = "benchmarks/kernels.py",
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` from the repository root; asserts it exits 0."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if triton_interpret:
        env["TRITON_INTERPRET"] = "1"
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=timeout)  # fmt: skip
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
    spec = {
        "op": "ce",
        "impl": "liger",
        "shape": [32, 16, 300],
        "device": "cpu",
        "repeats": 1,
        "calls": 1,
        "threads": 1,
        "size": "small",
    }
    result = run_script("--worker", json.dumps(spec), triton_interpret=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(measured["times"]) == 1 and measured["times"][0] > 0


def test_quick_kernels_default_benchmark_prints_its_headline_figures():
    """benchmarks/kernels_default.py --quick: whole runs with kernels off and auto (a tiny base
    on one task, a small local Llama under LoRA), each in its own process."""
    result = run_script(
        "--quick", "--jobs", "2", script="benchmarks/kernels_default.py", timeout=600
    )
    lines = result.stdout.strip().splitlines()
    assert "kernel tag" in result.stdout and "none (kernels: off)" in result.stdout
    assert "2 children side by side (timings not comparable)" in result.stdout
    tail = [BENCH_LINE.match(line) for line in lines[-4:]]
    assert all(tail), lines[-4:]
    assert [m.group(1) for m in tail] == [
        "kernels_auto_tiny_step_time_ratio_max",
        "kernels_auto_llama_2k_step_time_ratio",
        "kernels_auto_llama_2k_peak_mem_ratio",
        "kernels_auto_eval_loss_rel_diff_max",
    ]
    for match in tail[:3]:
        assert float(match.group(2)) > 0, match.group(0)
    # off and auto train the same model: the held-out loss agrees to float32 rounding.
    assert float(tail[3].group(2)) <= 1e-4
