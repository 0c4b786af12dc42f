"""Where one LoRA SFT step's time goes, by operator family, and how far the step is from the
time its matrix multiplications need at the rate this CPU reaches.

    python benchmarks/sft_step_profile.py                    # SmolLM2-135M's shape, float32
    python benchmarks/sft_step_profile.py --precision bf16-mixed
    python benchmarks/sft_step_profile.py --side trl         # TRL's SFTTrainer, the same step
    python benchmarks/sft_step_profile.py --quick            # a tiny shape, a smoke test

The run is the one ``benchmarks/train_options.py`` times: LoRA SFT through ``workbench.run``
(the default adapter settings, ``kernels: auto``) on a random-weight Llama of SmolLM2-135M's
shape (hidden 576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, vocabulary 49,152),
batch 8 x 128 tokens, every row cut to 128 tokens. ``torch.profiler`` records ``--active``
training steps, with the FLOPs of every matmul it sees, after ``--warmup`` untimed steps,
``--timed`` steps timed with the profiler off (their median is the step time: recording
shapes and FLOPs slows every op, and what the profiler allocates lingers after it stops) and
one step of the profiler's own warm-up.

The matmul bound: the FLOPs the profiler counts for the step's matrix multiplications
(``aten::mm``, ``addmm``, ``bmm``, ``matmul``, ``linear`` and attention's products),
divided by the rate ``torch.mm`` reaches on this machine, with the same threads and
precision, on the step's own commonest matmul shapes (the best of several timed calls of
each: the rate a well-fed GEMM gets, not a peak from a datasheet). The headline is the step
time over that bound: 1.0 would mean the step does nothing but matmuls at full speed.

Operator families (self time, so nothing is counted twice): matmul, attention (SDPA and
its softmax), the loss head (the fused op, or log-softmax and cross-entropy), elementwise
and norms (add, mul, SiLU, rsqrt, mean, rotary's cat/neg...), copies and casts (copy_,
to, clone, contiguous), optimizer (AdamW's foreach ops, zeroing), other (what remains:
autograd bookkeeping, Python and Lightning between the ops). The table comes first; the
last line is ``BENCH sft_step_over_matmul_bound <x> x target=<=1.5``.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average
from train_options import BATCH, LENGTH, SHAPES, build_model, spec_dict, versions

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
              "aten::linear", "aten::_scaled_mm")  # fmt: skip
FAMILIES = (
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention",
                   "aten::_softmax", "aten::softmax", "_softmax_backward")),
    ("loss head", ("fused_linear", "log_softmax", "cross_entropy", "nll_loss", "logsumexp")),
    ("optimizer", ("_foreach_", "aten::zero_", "Optimizer.", "adamw")),
    ("copies and casts", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::clone",
                          "aten::contiguous", "aten::cat", "aten::empty_like")),
    ("elementwise and norms", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::silu",
                               "aten::rsqrt", "aten::pow", "aten::mean", "aten::neg",
                               "aten::sum", "aten::exp", "aten::where", "aten::masked_fill",
                               "aten::sigmoid", "aten::tanh", "aten::gelu", "aten::rms_norm",
                               "aten::threshold", "silu_backward", "aten::fill_",
                               "aten::embedding", "aten::sqrt", "aten::reciprocal",
                               "aten::dropout", "aten::native_dropout")),
)  # fmt: skip


def family(op_name: str) -> str:
    if op_name in MATMUL_OPS:
        return "matmul"
    for name, markers in FAMILIES:
        if any(marker in op_name for marker in markers):
            return name
    return "other"


def matmul_rate(shapes: list[tuple[int, int, int]], dtype, repeats: int = 5) -> float:
    """GFLOP/s of ``torch.mm`` on ``shapes`` ((m, k, n), weighted by their FLOPs): the best
    of ``repeats`` timed calls of each, after a warm-up call."""
    import torch

    flops = seconds = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        flops += 2.0 * m * k * n
        seconds += best
    return flops / seconds / 1e9


def step_profiler(warmup: int, timed: int, active: int):
    """A CPU profiler that records shapes and FLOPs for the last ``active`` of ``warmup +
    timed + 1 + active`` steps (``profiler.step()`` at each step's end)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    return profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=warmup + timed, warmup=1, active=active, repeat=1),
        record_shapes=True,
        with_flops=True,
    )


def profile_workbench(folder: Path, precision: str, warmup: int, timed: int, active: int):
    """The workbench's LoRA SFT (``workbench.run``) under :func:`step_profiler`; returns the
    profiler and each step's ``perf/step_s`` by step (from 1)."""
    import workbench
    from workbench.running.events import RunObserver

    profiler, step_s = step_profiler(warmup, timed, active), {}

    class Stepper(RunObserver):
        """Each step's end advances the profiler's schedule."""

        def on_step(self, step, metrics):
            step_s[step] = metrics["perf/step_s"]
            profiler.step()

    spec = spec_dict(folder, "baseline", warmup + timed + 1 + active, "")
    spec["train"]["precision"] = precision
    with tempfile.TemporaryDirectory(prefix="sft-profile-store-") as tmp:
        spec["tracking"]["uri"] = f"sqlite:///{tmp}/mlflow.db"
        with profiler:
            result = workbench.run(spec, log=lambda *a: None, observers=[Stepper()])
    if result.status != "FINISHED":
        raise RuntimeError(f"the profiled run ended {result.status}")
    return profiler, step_s


def profile_trl(folder: Path, precision: str, warmup: int, timed: int, active: int):
    """TRL's SFTTrainer on the same rows, model, LoRA, batch, learning rate, schedule and
    precision as vs_trl.py gives it (completion-only loss; every row is cut to LENGTH tokens,
    so a batch has no padding and padding-free would change nothing) under
    :func:`step_profiler`; returns the profiler and each step's wall time (from the step's
    begin to its end, the forward, backward and optimizer step) by step (from 1)."""
    import json
    import warnings

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from vs_trl_setup import trl_run_settings
    from vs_trl_sft import lora_config

    profiler, step_s = step_profiler(warmup, timed, active), {}

    class Stepper(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s[state.global_step] = time.perf_counter() - self.started
            profiler.step()

    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    job = {"warmup": warmup, "steps": timed + 1 + active, "lr": 1e-4,
           "precision": "bf16" if precision.startswith("bf16") else "fp32"}  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    model = AutoModelForCausalLM.from_pretrained(folder / "model")
    with tempfile.TemporaryDirectory(prefix="sft-profile-trl-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = SFTConfig(
            **trl_run_settings(job, out),
            per_device_train_batch_size=BATCH,
            max_length=LENGTH,
            padding_free=False,
            completion_only_loss=True,
        )
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=lora_config(),
                             callbacks=[Stepper()])  # fmt: skip
        with profiler:
            trainer.train()
    return profiler, step_s


def profile_steps(
    folder: Path, precision: str, warmup: int, active: int, timed: int, side: str = "workbench"
) -> dict:
    """Run ``side``'s LoRA SFT for ``warmup + timed + 1 + active`` steps, timing steps
    ``warmup + 1`` to ``warmup + timed`` with the profiler off and profiling the last
    ``active`` ones; the figures by operator family."""
    import torch

    run = profile_trl if side == "trl" else profile_workbench
    profiler, step_s = run(folder, precision, warmup, timed, active)
    steps = warmup + timed + 1 + active
    events = profiler.key_averages(group_by_input_shape=True)
    by_family: dict[str, float] = collections.defaultdict(float)
    matmul_flops = 0.0
    shapes: collections.Counter = collections.Counter()
    for event in events:
        by_family[family(event.key)] += event.self_cpu_time_total / 1e6
        if family(event.key) == "matmul" or "attention" in event.key:
            matmul_flops += event.flops or 0
        if event.key == "aten::mm" and event.input_shapes and len(event.input_shapes) >= 2:
            (m, k), (_, n) = event.input_shapes[0][:2], event.input_shapes[1][:2]
            shapes[(m, k, n)] += event.count * 2 * m * k * n

    def median_step_s(first: int, last: int) -> float:
        times = sorted(step_s[s] for s in step_s if first <= s <= last)
        return times[len(times) // 2]

    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    commonest = [shape for shape, _ in shapes.most_common(6)]
    return {
        "profiled_step_s": median_step_s(steps - active + 1, steps),
        "step_s": median_step_s(warmup + 1, warmup + timed),
        "profiled_s": sum(by_family.values()) / active,
        "families": {k: v / active for k, v in by_family.items()},
        "matmul_gflop": matmul_flops / active / 1e9,
        "rate_gflops": matmul_rate(commonest, dtype) if commonest else float("nan"),
        "shapes": commonest,
        "largest": largest_ops_by_family(events, active),
    }


def largest_ops_by_family(events, active: int, keep: int = 4) -> dict[str, list]:
    """Each family's ``keep`` largest ops by self time a step, summed over input shapes."""
    by_name: dict[str, float] = collections.defaultdict(float)
    for event in events:
        by_name[event.key] += event.self_cpu_time_total / 1e6 / active
    largest: dict[str, list] = collections.defaultdict(list)
    for name, seconds in sorted(by_name.items(), key=lambda kv: -kv[1]):
        if len(largest[family(name)]) < keep:
            largest[family(name)].append((name, seconds))
    return dict(largest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny shape, 1 profiled step")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2)")
    parser.add_argument("--active", type=int, default=None, help="profiled steps (default 3)")
    parser.add_argument(
        "--timed",
        type=int,
        default=None,
        help="steps timed before the profiled ones, unprofiled (default 3)",
    )
    parser.add_argument("--side", choices=("workbench", "trl"), default="workbench",
                        help="whose SFT step: the workbench's, or TRL's SFTTrainer's")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shape_name = "quick" if args.quick else "135m"
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    active = args.active or (1 if args.quick else 3)
    timed = args.timed or (1 if args.quick else 3)
    print(f"LoRA SFT, one step profiled by operator family ({args.side}, {args.precision})")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, "
          f"{torch.get_num_threads()} torch threads; python {platform.python_version()}, "
          f"{versions()}")  # fmt: skip
    print(f"command: python benchmarks/sft_step_profile.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"shape {shape_name}: {SHAPES[shape_name]}; batch {BATCH} x {LENGTH} tokens; "
          f"{warmup} warm-up step(s), {timed} timed, {active} profiled")  # fmt: skip
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="sft-profile-") as tmp:
        folder = Path(tmp)
        build_model(folder, SHAPES[shape_name])
        figures = profile_steps(folder, args.precision, warmup, active, timed, args.side)
    step, bound_s = figures["step_s"], figures["matmul_gflop"] / figures["rate_gflops"]
    print()
    print(f"{'family':<24}{'s a step':>10}{'share':>8}")
    total = figures["profiled_s"]
    for name, seconds in sorted(figures["families"].items(), key=lambda kv: -kv[1]):
        print(f"{name:<24}{seconds:>10.3f}{seconds / total:>8.1%}")
    print(f"{'(profiled ops, all)':<24}{total:>10.3f}")
    print()
    print(f"step time (perf/step_s, median of the {timed} steps timed before profiling): "
          f"{step:.3f} s; the profiled steps' median: "
          f"{figures['profiled_step_s']:.3f} s")  # fmt: skip
    print(f"matmul work: {figures['matmul_gflop']:.1f} GFLOP a step (profiler FLOP counts)")
    print(f"torch.mm rate on the step's commonest shapes {figures['shapes']}: "
          f"{figures['rate_gflops']:.1f} GFLOP/s")  # fmt: skip
    print(f"matmul bound: {bound_s:.3f} s; matmul ops took "
          f"{figures['families'].get('matmul', 0.0):.3f} s in the step")  # fmt: skip
    print("largest ops of each family (self time a step):")
    for name, _ in sorted(figures["families"].items(), key=lambda kv: -kv[1]):
        ops = ", ".join(f"{op} {s:.3f} s" for op, s in figures["largest"].get(name, []))
        print(f"  {name}: {ops}")
    print(f"load average at end: {load_average()}")
    target = "<=1.5" if args.precision == "32-true" and args.side == "workbench" else "-"
    name = "sft_step_over_matmul_bound" + ("" if args.precision == "32-true" else "_bf16")
    name += "" if args.side == "workbench" else "_trl"
    print(f"BENCH {name} {step / bound_s:.2f} x target={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
