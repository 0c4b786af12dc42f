"""benchmarks/data_front.py --quick trains on every selector's subset (and on all rows) on the
fast base and ends with its two headlines; the rows each run trained on are its budget."""

from __future__ import annotations

import re

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script
from workbench.spec import components


def test_quick_data_front_runs_every_selector_and_prints_the_headlines():
    result = run_script("--quick", script="benchmarks/data_front.py", timeout=600)
    lines = result.stdout.strip().splitlines()
    # One run per built-in selector (and online-in-run) at 30% of the 40 rows (12 rows), and
    # one on all 40, with 30% of the answers corrupted: each selector's dropped rows are
    # scored against them.
    runs = {}
    for line in lines:
        match = re.match(r"^(\S+) +(\d+)% +0 +(\d+) +([\d.]+) +(\S+) +(\S+) +[\d.]+$", line)
        if match:
            runs[match[1]] = match.groups()[1:]
    builtin = [name for name, entry in components.SELECTORS.items() if entry.builtin]
    # online-in-run: random rows at the budget, batches chosen during the run.
    assert set(runs) == {*builtin, "online-in-run", "all"}, result.stdout[-3000:]
    for name, (budget, rows, quality, precision, recall) in runs.items():
        assert (budget, rows) == (("100", "40") if name == "all" else ("30", "12")), name
        assert 0 <= float(quality) <= 1
        if name != "all":  # 28 dropped rows hold at most all 12 corrupted ones
            assert 0 <= float(precision) <= 12 / 28 + 0.005 and 0 <= float(recall) <= 1, name
    parsed = [BENCH_LINE.match(line) for line in lines[-2:]]
    assert all(parsed), lines[-2:]
    assert [(m[1], m[3], m[4]) for m in parsed] == [
        ("best_selector_gain_at_30pct", "points", ">0"),
        ("best_selector_30pct_vs_all_rows", "points", ">=0"),
    ]
    assert all(abs(float(m[2])) <= 100 for m in parsed)  # points between two shares
