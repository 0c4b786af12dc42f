"""benchmarks/train_options.py --quick runs the baseline and the settings asked for, each in its
own process, and ends with their BENCH lines. Two settings keep the test short: every setting
is the same child with one spec field changed, and tests/running/test_train_options.py trains
with each of them (gradient checkpointing and compile included)."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script

HEADLINES = [("bf16_step_time_ratio", "<=1.0"), ("no_reuse_step_time_ratio", ">=1")]


def test_quick_train_options_benchmark_prints_its_headlines():
    result = run_script(
        "--quick", "--settings", "bf16,no_reuse", script="benchmarks/train_options.py", timeout=600
    )
    lines = result.stdout.strip().splitlines()
    for setting in ("baseline", "bf16", "no_reuse"):
        assert any(line.startswith(f"{setting} ") for line in lines), result.stdout
    for setting in ("grad_ckpt", "compile"):  # not asked for: not run
        assert not any(line.startswith(f"{setting} ") for line in lines), result.stdout
    tail = [BENCH_LINE.match(line) for line in lines[-len(HEADLINES) :]]
    assert all(tail), lines[-len(HEADLINES) :]
    assert [(m.group(1), m.group(3), m.group(4)) for m in tail] == [
        (name, "x", target) for name, target in HEADLINES
    ]
    # Step-time ratios are positive numbers.
    assert all(float(m.group(2)) > 0 for m in tail), tail
