"""The target benchmarks on the tiny base run end to end (--quick) and end with their BENCH
lines: preference_targets.py (DPO, RPO, a MODPO sweep) and rl_task_gain.py (GRPO, here with
the partial-credit reward registered by the script) on the tiny base, real_model.py (GRPO, RPO,
LoRA SFT from examples/) with the test base in place of the real chat model (which
tests/models/test_real_model.py trains): the script's path end to end, in seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH_LINE = re.compile(r"^BENCH (\S+) (-?\d+(?:\.\d+)?) (\S+) target=(\S+)$")


@pytest.mark.parametrize(
    ("script", "args", "headlines"),
    [
        (
            "preference_targets.py",
            ["--quick"],
            [
                "dpo_reward_accuracy_gain_points",
                "dpo_task_metric_gain_points",
                "rpo_reward_accuracy_gain_points",
                "rpo_task_metric_gain_points",
                "modpo_non_dominated",
                "modpo_spearman_min",
            ],
        ),
        (
            "rl_task_gain.py",
            ["--quick", "--closeness", "0.5"],
            ["grpo_arithmetic_exact_match_gain_points"],
        ),
        (
            "real_model.py",
            ["--quick", "--model", "tiny-fast"],
            [
                "real_grpo_arithmetic_gain_points",
                "real_dpo_task_gain_points",
                "real_sft_heldout_loss_ratio",
            ],
        ),
    ],
)
def test_a_target_benchmark_prints_its_headlines(default_tiny_base, script, args, headlines):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = [
        BENCH_LINE.match(line) for line in result.stdout.splitlines() if line.startswith("BENCH ")
    ]
    assert all(found) and [m.group(1) for m in found] == headlines, result.stdout[-2000:]
    for match in found:
        assert float(match.group(2)) == float(match.group(2)), match.group(0)  # not NaN
