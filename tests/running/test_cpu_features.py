"""A run asked for bfloat16 on a CPU without bfloat16 instructions says so before it trains
(torch emulates them there: 27x the float32 step in BENCHMARKS.md's train options). The line
is logged while the run is prepared, before its first step."""

from __future__ import annotations

import workbench
from tests.conftest import fast_spec
from workbench.running import cpu_features

WITHOUT = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n"
WITH = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n"


def test_flags_are_read_from_the_first_processor():
    assert cpu_features.cpu_flags(WITHOUT) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_features.native_bf16(WITHOUT) is False
    assert cpu_features.native_bf16(WITH) is True
    assert cpu_features.native_bf16("no flags here\n") is None


def test_only_bf16_on_a_cpu_without_its_instructions_is_warned_of():
    line = cpu_features.bf16_warning("bf16-mixed", on_gpu=False, cpuinfo=WITHOUT)
    assert line and "without bfloat16 instructions" in line and "32-true" in line
    assert cpu_features.bf16_warning("bf16-true", on_gpu=False, cpuinfo=WITHOUT)
    assert cpu_features.bf16_warning("bf16-mixed", on_gpu=False, cpuinfo=WITH) is None
    assert cpu_features.bf16_warning("bf16-mixed", on_gpu=True, cpuinfo=WITHOUT) is None
    assert cpu_features.bf16_warning("32-true", on_gpu=False, cpuinfo=WITHOUT) is None


def test_a_run_logs_the_warning_once_and_trains_as_asked(store_uri, monkeypatch):
    monkeypatch.setattr(cpu_features, "native_bf16", lambda cpuinfo=None: False)
    lines: list[str] = []
    spec = fast_spec(train={"steps": 1, "batch_size": 2, "eval_every": 1,
                            "precision": "bf16-mixed", "accelerator": "cpu"})  # fmt: skip
    result = workbench.run(spec, log=lambda *parts: lines.append(" ".join(map(str, parts))))
    assert result.status == "FINISHED"
    warned = [i for i, line in enumerate(lines) if "without bfloat16 instructions" in line]
    assert len(warned) == 1, lines
