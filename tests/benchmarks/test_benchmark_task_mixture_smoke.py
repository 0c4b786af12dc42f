"""benchmarks/task_mixture.py --quick runs the cocktail example mixed and with its target task
alone (for the same steps and for the mix's share of them), and ends with its BENCH lines."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


def test_quick_task_mixture_runs_the_mix_and_the_target_alone():
    result = run_script("--quick", script="benchmarks/task_mixture.py", timeout=600)
    out = result.stdout
    for arm in ("mix", "alone", "alone-half"):
        assert f"  {arm:<11}seed 0: correctness/order " in out, out
    lines = out.strip().splitlines()
    tail = [BENCH_LINE.match(line) for line in lines[-2:]]
    assert all(tail), lines[-2:]
    assert [(m.group(1), m.group(3), m.group(4)) for m in tail] == [
        ("cocktail_target_gain_points", "points", ">0"),
        ("cocktail_gain_over_equal_exposure_points", "points", ">0"),
    ]
