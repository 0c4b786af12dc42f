"""Fused linear cross-entropy / token log-probs against the naive torch computation.

    python benchmarks/kernels.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/kernels.py --quick    # smaller sizes, one round, 2 single-threaded
                                            # workers at once: a CI smoke test (its figures
                                            # mean little)

For each op (``ce``: ``fused_linear_cross_entropy``, mean reduction; ``logprobs``:
``fused_linear_token_logprobs`` with a random per-token gradient; ``logprobs_frozen_head``:
the same with the head frozen, as under LoRA; ``logprobs_prompt_masked``: 40% of the
positions ignored, as the prompt tokens of an SFT batch are; the others ignore 5%, as
padding) and each size, the fused op and the naive
computation (full N x V logits, then ``F.cross_entropy`` or ``log_softmax`` + ``gather``)
each run forward + backward in their OWN subprocess:

- peak memory: the process's high-water RSS after the runs (Linux: VmHWM, see
  ``_high_water_kib``; elsewhere ``resource.getrusage``) minus the one taken after imports
  and input creation (the mark is reset to the current RSS just before, on Linux); the
  weight and hidden gradients count.
- time: the median wall time per forward + backward call over a few timed repeats, after
  one warm-up call (at the small size each repeat times 25 calls, with one intra-op thread:
  see THREADS; the table also shows the fastest repeat: on a shared machine it shows the
  cost without interference).

A full run repeats every measurement in ``--rounds`` rounds, naive and fused back to back
in alternating order; a time ratio is the median over rounds of each round's ratio, which
keeps slow phases of a shared machine from landing on one side only. With CUDA, the same ops
also run on the GPU (bfloat16) against torch eager and Liger-Kernel's
``LigerFusedLinearCrossEntropyLoss`` when it is installed; nothing GPU-related runs or
fails without one. The table comes first; the last lines are the headline figures in the
house convention ``BENCH <figure> <value> <unit> target=<target>``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from machine_load import load_average

SIZES = {"large": (4096, 512, 32000), "small": (256, 128, 1000)}
QUICK_SIZES = {"large": (1024, 64, 8000), "small": (64, 32, 500)}
# Timed repeats per process, each of CALLS forward + backward calls (the small size runs in
# about a millisecond: a repeat of 25 calls averages out a preempted thread's stall, which
# on a shared 2-core machine is longer than a call).
REPEATS = {"large": 3, "small": 15}
QUICK_REPEATS = {"large": 2, "small": 5}
CALLS = {"large": 1, "small": 25}
# Intra-op threads per size (None: torch's default, one per core). A call at the small size
# is ~20 short parallel regions: on a shared 2-core machine each waits for a preempted
# thread, and that wait, not the ops, decided the figure (medians 3x the fastest repeat,
# for the plain computation as much as the fused one). One thread compares the ops' cost.
THREADS = {"large": None, "small": 1}
# ce: fused_linear_cross_entropy (mean); logprobs: fused_linear_token_logprobs with a random
# per-token gradient; logprobs_frozen_head: the same with a frozen head (LoRA-style: only
# hidden wants a gradient); logprobs_prompt_masked: trainable head, with the prompt
# positions of an SFT batch ignored. The last two in full runs only.
OPS = ("ce", "logprobs", "logprobs_frozen_head", "logprobs_prompt_masked")
QUICK_OPS = ("ce", "logprobs")
# Share of positions whose target is ignore_index: a few padded positions, as in real
# batches; with prompts masked, 40% (a prompt a bit shorter than its answer).
IGNORED_FRACTION = {"logprobs_prompt_masked": 0.4}
DEFAULT_IGNORED_FRACTION = 0.05


# ---------------------------------------------------------------------------------------
# worker: one measurement in a fresh process


def worker(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from workbench.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy
    from workbench.kernels.fused_linear_token_logprobs import fused_linear_token_logprobs

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    n, h, v = spec["shape"]
    gen = torch.Generator(device=device).manual_seed(0)
    make = {"device": device, "dtype": dtype, "generator": gen}
    # In place, so that no full-size temporary raises the baseline's high-water mark.
    hidden = torch.randn(n, h, **make).requires_grad_()
    weight = torch.randn(v, h, **make).mul_(h**-0.5 * 2)
    weight.requires_grad_(spec["op"] != "logprobs_frozen_head")
    targets = torch.randint(0, v, (n,), device=device, generator=gen)
    fraction = IGNORED_FRACTION.get(spec["op"], DEFAULT_IGNORED_FRACTION)
    ignored = torch.rand(n, device=device, generator=gen) < fraction
    targets[ignored] = -100
    grad_rows = torch.randn(n, device=device, generator=gen)
    op, impl = spec["op"], spec["impl"]

    if impl == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger_loss = LigerFusedLinearCrossEntropyLoss()

    def forward():
        if impl == "fused":
            if op == "ce":
                return fused_linear_cross_entropy(hidden, weight, targets)
            return fused_linear_token_logprobs(hidden, weight, targets)  # either logprobs op
        if impl == "liger":
            return liger_loss(weight, hidden, targets)
        logits = F.linear(hidden, weight)  # the naive computation: all N x V logits
        if op == "ce":
            return F.cross_entropy(logits, targets, ignore_index=-100)
        valid = targets != -100
        picked = logits.log_softmax(-1).gather(-1, torch.where(valid, targets, 0)[:, None])
        return picked.squeeze(-1) * valid

    def step():
        hidden.grad = weight.grad = None
        out = forward()
        out.backward(grad_rows if out.dim() else None)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.max_memory_allocated()
    else:
        _reset_high_water_mark()
        baseline = _high_water_kib()
    step()  # warm-up
    times, cpu_times = [], []  # per call
    calls = spec["calls"]
    for _ in range(spec["repeats"]):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        times.append((time.perf_counter() - start) / calls)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        cpu_times.append(cpu / calls)
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - baseline) / 2**20
    else:
        peak_mb = (_high_water_kib() - baseline) / 1024
    return {"times": times, "cpu_times": cpu_times, "peak_mb": peak_mb}


def _reset_high_water_mark() -> None:
    """Start the high-water mark at the current RSS (Linux >= 4.0), so that a transient peak
    while importing or building the inputs does not hide the measured one."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # the baseline is then the high-water mark so far, as getrusage reports it


def _high_water_kib() -> int:
    """The process's high-water RSS in KiB: the memory map's own mark (VmHWM) on Linux.

    ``getrusage``'s ``ru_maxrss`` is never below the RSS of the parent at fork time (the
    kernel carries it over the exec), so a worker started by a driver that imported torch
    would report the driver's size; VmHWM belongs to the worker's image alone.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def run_worker(spec: dict) -> dict:
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# driver


def versions() -> dict:
    from importlib import metadata

    info = {"python": platform.python_version()}
    for name in ("torch", "triton", "liger-kernel"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def measure(device, ops, impls, sizes, repeats, rounds, jobs=1) -> dict:
    """{(op, size, impl): {"time", "min", "cpu", "peak_mb", "round_times"}}: medians over all
    repeats, the fastest repeat, and each round's median time (for paired ratios).

    Within a round the implementations of one (size, op) run back to back, in an order
    that alternates between rounds, so that slow phases of a shared machine hit both.
    ``jobs`` > 1 runs that many single-threaded workers at once: only for smoke tests (they
    then share the cores, so their times mean little).
    """
    specs = []
    for round_index in range(rounds):
        order = impls if round_index % 2 == 0 else impls[::-1]
        for size, shape in sizes.items():
            for op in ops:
                for impl in order:
                    if impl == "liger" and op != "ce":
                        continue
                    specs.append({"op": op, "impl": impl, "shape": shape, "device": device,
                                  "repeats": repeats[size], "calls": CALLS[size],
                                  "threads": 1 if jobs > 1 else THREADS[size],
                                  "size": size})  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        outputs = list(pool.map(run_worker, specs))
    samples: dict = {}
    for spec, out in zip(specs, outputs):
        key = (spec["op"], spec["size"], spec["impl"])
        entry = samples.setdefault(key, {"t": [], "c": [], "m": [], "r": []})
        entry["t"] += out["times"]
        entry["c"] += out["cpu_times"]
        entry["m"].append(out["peak_mb"])
        entry["r"].append(statistics.median(out["times"]))
    return {
        key: {
            "time": statistics.median(s["t"]),
            "min": min(s["t"]),
            "cpu": statistics.median(s["c"]),
            "peak_mb": statistics.median(s["m"]),
            "round_times": s["r"],
        }
        for key, s in samples.items()
    }


def time_ratio(result: dict, base: dict) -> float:
    """Median over rounds of the round's time ratio (rounds pair the two measurements)."""
    pairs = zip(result["round_times"], base["round_times"])
    return statistics.median(t / b for t, b in pairs)


def mem_ratio(result: dict, base: dict) -> float:
    return result["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")


def print_table(title: str, results: dict, sizes: dict, ops) -> None:
    print(f"\n{title}")
    width = max(len(op) for op in ops) + 1
    header = (f"{'op':<{width}} {'size (N, H, V)':<19} {'impl':<6} {'median s':>9} {'min s':>9} "
              f"{'cpu s':>8} {'peak MiB':>9} {'time/naive':>10} {'mem/naive':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for size, shape in sizes.items():
        for op in ops:
            naive = results[(op, size, "naive")]
            for (r_op, r_size, impl), r in results.items():
                if (r_op, r_size) != (op, size):
                    continue
                print(f"{op:<{width}} {str(shape):<19} {impl:<6} {r['time']:>9.4f} "
                      f"{r['min']:>9.4f} {r['cpu']:>8.3f} {r['peak_mb']:>9.1f} "
                      f"{time_ratio(r, naive):>10.3f} {mem_ratio(r, naive):>9.3f}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (CI)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = QUICK_REPEATS if args.quick else REPEATS
    ops = QUICK_OPS if args.quick else OPS
    rounds = args.rounds or (1 if args.quick else 5)
    info = versions()
    print("Fused linear cross-entropy / token log-probs vs naive torch (forward + backward)")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; "
          + ", ".join(f"{k} {v}" for k, v in info.items()))  # fmt: skip
    print(f"command: python benchmarks/kernels.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"rounds: {rounds}; timed repeats per process: {repeats}, of {CALLS} calls each; "
          "time/naive: median over rounds of each round's ratio of medians")  # fmt: skip
    print(f"intra-op threads: {'1 (parallel workers)' if args.quick else THREADS} "
          "(None: torch's default)")  # fmt: skip
    print(f"load average at start: {load_average()}")

    jobs = 2 if args.quick else 1
    cpu = measure("cpu", ops, ("naive", "fused"), sizes, repeats, rounds, jobs)
    print_table("CPU, float32 (wall s per forward + backward; cpu: process CPU s)", cpu, sizes, ops)
    print(f"load average at end: {load_average()}")

    import torch

    lines = []  # (figure, value, target)
    if torch.cuda.is_available():
        impls = ("naive", "fused") + (("liger",) if info["liger-kernel"] != "not installed" else ())
        gpu = measure("cuda", ops, impls, sizes, repeats, rounds)  # one at a time
        title = f"GPU ({torch.cuda.get_device_name()}), bfloat16; naive = torch eager"
        print_table(title, gpu, sizes, ops)
        for op in ops:
            fused = gpu[(op, "large", "fused")]
            lines.append((f"gpu_{_figure(op, 'time_ratio')}", fused, gpu[(op, "large", "naive")],
                          "time", "<=0.8"))  # fmt: skip
            if (op, "large", "liger") in gpu:
                lines.append((f"gpu_{_figure(op, 'time_ratio_vs_liger')}", fused,
                              gpu[(op, "large", "liger")], "time", "<=1.0"))  # fmt: skip
    else:
        print("\nGPU: no CUDA device; GPU comparisons (torch eager, Liger-Kernel) not run.")

    def cpu_line(op, size, what, target):
        figure = _figure(op, ("small_" if size == "small" else "") + what)
        key = "peak_mb" if what == "peak_mem_ratio" else "time"
        return figure, cpu[(op, size, "fused")], cpu[(op, size, "naive")], key, target

    for op in ("logprobs_frozen_head", "logprobs_prompt_masked"):
        if op in ops:
            lines.append(cpu_line(op, "large", "time_ratio", "<=0.8"))
    for op in ("ce", "logprobs"):
        lines.append(cpu_line(op, "large", "peak_mem_ratio", "<=0.15"))
        lines.append(cpu_line(op, "large", "time_ratio", "<=0.8"))
    for op in ("ce", "logprobs"):
        lines.append(cpu_line(op, "small", "time_ratio", "<=1.1"))
    print()
    for figure, fused, base, key, target in lines:
        value = mem_ratio(fused, base) if key == "peak_mb" else time_ratio(fused, base)
        print(f"BENCH {figure} {value:.3f} x target={target}")
    return 0


def _figure(op: str, what: str) -> str:
    return f"fused_{op}_{what}"  # fused_ce_time_ratio, fused_logprobs_peak_mem_ratio, ...


if __name__ == "__main__":
    sys.exit(main())
