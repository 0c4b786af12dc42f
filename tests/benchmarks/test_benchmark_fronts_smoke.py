"""benchmarks/fronts.py --quick runs every front builder on the fast base and prints its figures."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


def test_quick_fronts_benchmark_runs_every_builder_and_prints_the_headline():
    result = run_script("--quick", script="benchmarks/fronts.py")
    table = result.stdout
    for builder in ("sweep", "conditioned", "merging", "search", "mgda"):
        assert any(line.startswith(f"{builder} ") for line in table.splitlines()), table[-1500:]
    parsed = [BENCH_LINE.match(line) for line in table.strip().splitlines()[-1:]]
    assert all(parsed), table[-500:]
    name, value, unit, target = parsed[0].groups()
    assert (name, unit, target) == ("hv_ratio_two_models_vs_sweep", "x", ">=0.9")
    assert float(value) >= 0
