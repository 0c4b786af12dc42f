"""benchmarks/vs_trl.py --quick runs both sides end to end and ends with parseable BENCH lines."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH_LINE = re.compile(r"^BENCH (\S+) (-?\d+(?:\.\d+)?) (\S+) target=(\S+)$")

pytestmark = pytest.mark.slow
pytest.importorskip("trl")


def test_quick_vs_trl_benchmark_prints_its_headline_figures():
    """The workbench's DPO and TRL's DPOTrainer (at equal configuration and with TRL's
    defaults), then the workbench's GRPO and TRL's GRPOTrainer, each in its own process, on a
    small local model."""
    result = subprocess.run([sys.executable, "benchmarks/vs_trl.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for row in ("workbench", "trl", "trl-defaults"):
        assert any(line.startswith(f"{row} ") for line in lines), result.stdout
    # The workbench ran its fused loss head, TRL its own configuration.
    assert "fused_linear_logprobs=torch" in result.stdout
    assert "float32, gradient checkpointing off, reference precomputed" in result.stdout
    assert "GRPO: the workbench against TRL's GRPOTrainer" in result.stdout
    assert "no reference model, transformers generate" in result.stdout
    tail = [BENCH_LINE.match(line) for line in lines[-4:]]
    assert all(tail), lines[-4:]
    assert [(m.group(1), m.group(3), m.group(4)) for m in tail] == [
        ("dpo_tokens_per_s_ratio_vs_trl", "x", ">=1.1"),
        ("dpo_peak_mem_ratio_vs_trl", "x", "<=0.6"),
        ("grpo_tokens_per_s_ratio_vs_trl", "x", ">=1.1"),
        ("grpo_peak_mem_ratio_vs_trl", "x", "<=0.8"),
    ]
    for match in tail:
        value = float(match.group(2))
        assert value > 0 and value == value, match.group(0)  # positive, not NaN
