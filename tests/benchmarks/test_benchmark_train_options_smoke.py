"""benchmarks/train_options.py --quick runs the baseline and the settings asked for, each in its
own process, and ends with their BENCH lines. Two settings, one a train option and one an
optimizer setting, keep the test short: every setting is the same child with one spec field
changed, and tests/running/test_train_options.py trains with each train option (gradient
checkpointing and compile included). Full fine-tuning: the adapter the optimizer setting is
measured with."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script

HEADLINES = [
    ("bf16_step_time_ratio", "<=1.0"),
    ("foreach_adam_step_time_ratio", ">=1"),
    ("foreach_adam_peak_mem_ratio", ">=1"),
]


def test_quick_train_options_benchmark_prints_its_headlines():
    result = run_script(
        "--quick",
        "--adapter",
        "full",
        "--settings",
        "bf16,foreach_adam",
        "--jobs",
        "2",  # the runs side by side: a smoke run, whose timings say nothing
        script="benchmarks/train_options.py",
        timeout=600,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Full fine-tuning SFT"), lines[0]
    assert "2 children side by side (timings not comparable)" in result.stdout
    for setting in ("baseline", "bf16", "foreach_adam"):
        assert any(line.startswith(f"{setting} ") for line in lines), result.stdout
    for setting in ("grad_ckpt", "compile", "no_reuse"):  # not asked for: not run
        assert not any(line.startswith(f"{setting} ") for line in lines), result.stdout
    tail = [BENCH_LINE.match(line) for line in lines[-len(HEADLINES) :]]
    assert all(tail), lines[-len(HEADLINES) :]
    assert [(m.group(1), m.group(3), m.group(4)) for m in tail] == [
        (name, "x", target) for name, target in HEADLINES
    ]
    # Step-time ratios are positive numbers.
    assert all(float(m.group(2)) > 0 for m in tail), tail
