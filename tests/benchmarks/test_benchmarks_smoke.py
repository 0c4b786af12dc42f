"""benchmarks/vs_trl.py --quick runs both sides of every method end to end and ends with
parseable BENCH lines."""

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
    """The workbench's SFT, DPO and GRPO against TRL's SFTTrainer (padding-free on mimalloc,
    padded on the system allocator), DPOTrainer and GRPOTrainer (on mimalloc), each run in its
    own process, on a tiny model of the word-level shape, in bf16 (the precision whose
    settings differ between the libraries; float32 is the same code with the flag off). One
    precision and the rows chosen keep the test to 7 child processes: TRL's plain row on the
    system allocator differs from its mimalloc row only by the allocator, which the padded
    row covers."""
    rows = ("workbench", "trl-mimalloc", "trl-padded")
    result = subprocess.run(
        [sys.executable, "benchmarks/vs_trl.py", "--quick", "--precision", "bf16",
         "--rows", ",".join(rows), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    lines = out.strip().splitlines()
    # Two children at a time (a smoke run: most of a child's time is its imports, on one core).
    assert "2 children side by side (timings not comparable)" in out
    for title in ("SFT bf16: the workbench against TRL's SFTTrainer",
                  "DPO bf16: the workbench against TRL's DPOTrainer",
                  "GRPO bf16: the workbench against TRL's GRPOTrainer"):  # fmt: skip
        assert title in out, out
    for row in rows:
        assert any(line.startswith(f"{row} ") for line in lines), out
        # Each child's figures are shown on stderr as it ends (a full run takes hours).
        assert f"repeat 1/1 {row}: " in result.stderr, result.stderr[-3000:]
    assert not any(line.startswith("trl ") for line in lines), out  # a row not asked for
    # Both sides ran at the asked precision; TRL with the options this benchmark gives it.
    assert "bfloat16 mixed, LoRA, gradient checkpointing off, padding-free on" in out
    assert "bfloat16 mixed, LoRA, gradient checkpointing off, padding-free off" in out
    assert "bfloat16 mixed, gradient checkpointing off, reference precomputed" in out
    assert "no reference model, transformers generate" in out
    assert out.count("bfloat16 mixed, LoRA, kernels: auto") == 1
    # The measured prompt share of each method's rows is printed and in 30-60%.
    shares = [int(s) for s in re.findall(r"the prompt (\d+)% of the tokens", out)]
    assert len(shares) == 3 and all(30 <= s <= 60 for s in shares), shares
    # The BENCH lines close the output: the headline pair per method, against TRL's fastest
    # row (no pair against TRL's plain row on the system allocator, which did not run).
    count = next(i for i, line in enumerate(reversed(lines)) if not line.startswith("BENCH "))
    tail = [BENCH_LINE.match(line) for line in lines[-count:]]
    assert all(tail), lines[-count:]
    headline = [(m.group(1), m.group(3), m.group(4)) for m in tail]
    assert headline == [
        ("sft_tokens_per_s_ratio_vs_trl_bf16", "x", ">=2"),
        ("sft_peak_mem_ratio_vs_trl_bf16", "x", "<=0.5"),
        ("dpo_tokens_per_s_ratio_vs_trl_bf16", "x", ">=1.5"),
        ("dpo_peak_mem_ratio_vs_trl_bf16", "x", "<=0.6"),
        ("grpo_tokens_per_s_ratio_vs_trl_bf16", "x", ">=1.2"),
        ("grpo_peak_mem_ratio_vs_trl_bf16", "x", "<=0.8"),
    ]
    for match in tail:
        value = float(match.group(2))
        assert value > 0 and value == value, match.group(0)  # positive, not NaN
