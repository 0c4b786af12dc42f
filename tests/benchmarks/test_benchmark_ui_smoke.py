"""benchmarks/ui.py --quick builds the explorer over a store it fills and prints its figures."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


def test_quick_ui_benchmark_prints_the_headline_figures():
    result = run_script("--quick", "--runs", "40", script="benchmarks/ui.py")
    assert "ParetoExplorer over 40 finished runs" in result.stdout
    parsed = [BENCH_LINE.match(line) for line in result.stdout.strip().splitlines()[-2:]]
    assert all(parsed), result.stdout[-500:]
    assert [(m.group(1), m.group(3), m.group(4)) for m in parsed] == [
        ("explorer_load_40_runs_s", "s", "<=2"),
        ("explorer_rerank_ms", "ms", "<=50"),
    ]
    assert all(float(m.group(2)) > 0 for m in parsed)
