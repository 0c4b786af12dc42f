"""benchmarks/peft_front.py --quick trains each of its smoke-test methods in its own process
and prints the table and its BENCH line."""

from __future__ import annotations

from tests.kernels.test_benchmark_smoke import BENCH_LINE, run_script


def test_quick_peft_front_prints_each_method_and_its_count():
    result = run_script("--quick", script="benchmarks/peft_front.py", timeout=600)
    lines = result.stdout.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("lora ", "mezo "))}
    assert set(rows) == {"lora", "mezo"}, result.stdout
    # MeZO trains the whole base; LoRA a small share of it.
    trainable = {name: int(row[3].replace(",", "")) for name, row in rows.items()}
    assert 0 < trainable["lora"] < trainable["mezo"] / 2, trainable
    bench = BENCH_LINE.match(lines[-1])
    assert bench and bench.group(1) == "peft_methods_compared", lines[-1]
    assert (bench.group(2), bench.group(4)) == ("2", ">=2")
