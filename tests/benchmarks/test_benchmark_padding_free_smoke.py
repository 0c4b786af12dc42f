"""benchmarks/padding_free.py --quick runs each setting in its own process and ends with its
BENCH line."""

from __future__ import annotations

import re

import pytest

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script

pytestmark = pytest.mark.slow


def test_quick_padding_free_benchmark_prints_its_headline():
    result = run_script("--quick", "--jobs", "2", script="benchmarks/padding_free.py", timeout=600)
    lines = result.stdout.strip().splitlines()
    assert "2 children side by side (timings not comparable)" in result.stdout
    rows = {}
    for setting in ("padded", "packed", "packed_one"):
        (row,) = [line.split() for line in lines if re.match(rf"{setting} +\d", line)]
        rows[setting] = row
    pad = {setting: float(row[1]) for setting, row in rows.items()}
    # Packing removes padding (one sequence a batch: all of it), and changes no number.
    assert pad["padded"] > pad["packed"] and pad["packed_one"] == 0.0, pad
    assert len({row[-1] for row in rows.values()}) == 1, rows  # the same held-out NLL
    match = BENCH_LINE.match(lines[-1])
    assert match, lines[-1]
    assert (match.group(1), match.group(3), match.group(4)) == (
        "padding_free_tokens_per_s_ratio", "x", ">1",
    )  # fmt: skip
    assert float(match.group(2)) > 0
