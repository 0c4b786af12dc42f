"""benchmarks/train_options.py --quick runs every setting in its own process and ends with its
BENCH lines."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script

HEADLINES = [
    ("grad_ckpt_peak_mem_ratio", "<=0.7"),
    ("grad_ckpt_step_time_ratio", "<=1.4"),
    ("bf16_step_time_ratio", "<=1.0"),
    ("compile_step_time_ratio", "<=0.9"),
    ("no_reuse_step_time_ratio", ">=1"),
]


def test_quick_train_options_benchmark_prints_its_headlines():
    result = run_script("--quick", script="benchmarks/train_options.py", timeout=600)
    lines = result.stdout.strip().splitlines()
    for setting in ("baseline", "grad_ckpt", "bf16", "compile", "no_reuse"):
        assert any(line.startswith(f"{setting} ") for line in lines), result.stdout
    tail = [BENCH_LINE.match(line) for line in lines[-len(HEADLINES) :]]
    assert all(tail), lines[-len(HEADLINES) :]
    assert [(m.group(1), m.group(3), m.group(4)) for m in tail] == [
        (name, "x", target) for name, target in HEADLINES
    ]
    # The step-time ratios are positive numbers; a memory ratio may be nan at this size (no
    # training peak above the model load).
    assert all(float(m.group(2)) > 0 for m in tail if "time" in m.group(1)), tail
