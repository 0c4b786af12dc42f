"""What this CPU can do natively that decides a precision's speed.

``train.precision: bf16-mixed`` runs a CPU step's matrix products in bfloat16. Where the
cores have bfloat16 instructions (AVX-512 BF16, AMX) that is faster than float32 (0.64x the
float32 step for LoRA SFT at SmolLM2-135M's shape on a 2-core AMD EPYC with AVX-512 BF16);
where they do not, torch emulates them, and a step takes many times the float32 one (27x at
the small shape of ``benchmarks/train_options.py`` on a 2-core AMD EPYC without AVX-512,
BENCHMARKS.md).
A run asked for it on such a CPU says so before it trains.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The CPU flags (as Linux names them) of bfloat16 matrix instructions.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of the first processor listed in ``cpuinfo`` (/proc/cpuinfo's text)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bfloat16 matrix instructions; None where this cannot be read (no
    /proc/cpuinfo: macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return None
    flags = cpu_flags(cpuinfo)
    if not flags:
        return None
    return any(flag in flags for flag in BF16_FLAGS)


def bf16_warning(precision: str, on_gpu: bool, cpuinfo: str | None = None) -> str | None:
    """A line for the run's log when ``precision`` computes in bfloat16 on a CPU that lacks
    the instructions for it; None otherwise."""
    if on_gpu or not precision.startswith("bf16") or native_bf16(cpuinfo) is not False:
        return None
    return (
        f"warning: train.precision = {precision} on a CPU without bfloat16 instructions "
        f"({', '.join(BF16_FLAGS)}): torch emulates them, and a step can take many times "
        "the float32 one (27x in BENCHMARKS.md's train options on such a CPU); "
        "use train.precision: 32-true on this machine"
    )
