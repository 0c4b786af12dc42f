"""Every adapter and MeZO trained the same way on one task: held-out quality against what each
costs (trainable parameters, peak memory, time per step), with the non-dominated ones marked.

    python benchmarks/peft_front.py            # 3 seeds (about 30 minutes on 2 cores)
    python benchmarks/peft_front.py --seeds 1  # one seed
    python benchmarks/peft_front.py --quick    # the fast test base, 2 steps, 1 seed, a few
                                               # methods: a smoke test (its figures mean little)
    python benchmarks/peft_front.py --only lora,ia3,full

Each method is one ``workbench.run`` of SFT from the default tiny base on the built-in
``sort`` task (the base answers a third of its held-out prompts: room to gain), the same
steps, batch, data and seed for every method; only the ``adapter`` section and the optimizer's
learning rate differ (``METHODS`` below: each rate is a typical value for the method's kind
from its paper or peft's examples, not tuned on this task's held-out set). Each run is its
own process, so its memory is its own: ``perf/peak_mem_mb``, the run's training high-water
mark above the loaded model, as every run records it, and the process's lifetime peak read
from outside (``child_peak_memory``), the same way for every method.

Per method: held-out exact match (greedy, 48 prompts) and held-out NLL of the answers at the
end, trainable parameters (``cost/trainable_params``), training peak memory, the median
``perf/step_s`` after the first two steps, tokens/s. With several seeds each figure is the
median over seeds, the spread (min-max) of exact match beside it. Non-dominated: no other
method is at least as good on exact match (max), trainable parameters (min) and peak memory
(min) and better on one (``workbench.fronts.pareto.non_dominated``). The last line is
``BENCH peft_methods_compared <count> methods target=>=<all>``: the methods that ran to
completion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from child_peak_memory import run_child_process
from machine_load import load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, adapter section, optimizer section): the rate is the method kind's typical one.
METHODS = (
    ("full", {"name": "full"}, {"name": "adamw", "lr": 1e-4}),
    ("lora", {"name": "lora"}, {"name": "adamw", "lr": 1e-3}),
    ("lora-rslora", {"name": "lora", "use_rslora": True}, {"name": "adamw", "lr": 1e-3}),
    ("lora-pissa", {"name": "lora", "init": "pissa"}, {"name": "adamw", "lr": 1e-3}),
    ("lora-olora", {"name": "lora", "init": "olora"}, {"name": "adamw", "lr": 1e-3}),
    ("lora-eva", {"name": "lora", "init": "eva"}, {"name": "adamw", "lr": 1e-3}),
    ("lora-corda", {"name": "lora", "init": "corda"}, {"name": "adamw", "lr": 1e-3}),
    ("dora", {"name": "lora", "use_dora": True}, {"name": "adamw", "lr": 1e-3}),
    ("ia3", {"name": "ia3"}, {"name": "adamw", "lr": 3e-3}),
    ("loha", {"name": "loha"}, {"name": "adamw", "lr": 1e-3}),
    ("lokr", {"name": "lokr"}, {"name": "adamw", "lr": 1e-3}),
    ("vera", {"name": "vera"}, {"name": "adamw", "lr": 3e-3}),
    ("prompt_tuning", {"name": "prompt_tuning"}, {"name": "adamw", "lr": 1e-2}),
    ("prefix_tuning", {"name": "prefix_tuning"}, {"name": "adamw", "lr": 1e-2}),
    ("hft", {"name": "hft"}, {"name": "adamw", "lr": 1e-4}),
    ("lisa", {"name": "lisa", "layers": 1}, {"name": "adamw", "lr": 1e-4}),  # of 2 layers
    ("lift", {"name": "lift"}, {"name": "adamw", "lr": 1e-4}),
    ("ssf", {"name": "ssf"}, {"name": "adamw", "lr": 1e-3}),
    ("sparse", {"name": "sparse"}, {"name": "adamw", "lr": 1e-3}),
    ("mezo", {"name": "full"}, {"name": "mezo", "lr": 1e-5}),
    ("mezo-lora", {"name": "lora"}, {"name": "mezo", "lr": 1e-4}),
)
QUICK_METHODS = ("lora", "mezo")
TASK, EVAL_SIZE, TRAIN_SIZE = "sort", 48, 2000
WARMUP_STEPS = 2


def spec_for(label: str, seed: int, steps: int, quick: bool, uri: str) -> dict:
    _, adapter, optimizer = next(m for m in METHODS if m[0] == label)
    return {
        "model": {"name": "tiny-fast" if quick else "tiny"},
        "data": {"source": TASK, "train_size": 64 if quick else TRAIN_SIZE,
                 "eval_size": 8 if quick else EVAL_SIZE},
        "method": "sft",
        "adapter": adapter,
        "optimizer": optimizer,
        "objectives": [
            {"name": "exact_match", "direction": "max", "source": "metric:exact_match"},
            {"name": "heldout_nll", "direction": "min", "source": "term:completion"},
        ],
        "train": {"steps": steps, "batch_size": 16, "eval_every": steps, "seed": seed},
        "eval": {"samples_logged": 0},
        "tracking": {"uri": uri, "experiment": "peft-front", "log_model": False},
    }  # fmt: skip


def child(label: str, seed: int, steps: int, quick: bool) -> dict:
    """One method's run in this process; its figures as read back from its MLflow run."""
    import workbench
    from workbench import tracking

    with tempfile.TemporaryDirectory(prefix="peft-front-store-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        started = time.perf_counter()
        result = workbench.run(spec_for(label, seed, steps, quick, uri), log=lambda *a: None)
        wall = time.perf_counter() - started
        client = tracking.connect(uri)

        def series(key: str) -> list[float]:
            history = client.get_metric_history(result.run_id, key)
            return [m.value for m in sorted(history, key=lambda m: m.step)]

        step_s, tokens_per_s = series("perf/step_s"), series("perf/tokens_per_s")
        timed = step_s[WARMUP_STEPS:] or step_s
        peak = series("perf/peak_mem_mb")
        return {
            "status": result.status,
            "exact_match": result.objectives.get("exact_match"),
            "base_exact_match": result.trajectory[0][1].get("exact_match"),
            "heldout_nll": result.objectives.get("heldout_nll"),
            "trainable": series("cost/trainable_params")[0],
            "peak_mb": peak[-1] if peak else float("nan"),
            "step_s": statistics.median(timed),
            "tokens_per_s": statistics.median(tokens_per_s[WARMUP_STEPS:] or tokens_per_s),
            "wall_s": wall,
        }


def run_method(label: str, seed: int, steps: int, quick: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", label, "--seed", str(seed),
               "--steps", str(steps), *(["--quick"] if quick else [])]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = run_child_process(command, env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return {"status": "FAILED", "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return {**json.loads(lines[-1][len("RESULT ") :]), "process_peak_mb": out.peak_rss_mb}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test (fast base, 2 steps)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 60)")
    parser.add_argument("--only", default=None, help="comma-separated method labels")
    parser.add_argument("--child", choices=[m[0] for m in METHODS], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 60)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.seed, steps, args.quick)))
        return 0
    seeds = args.seeds or (1 if args.quick else 3)
    labels = [m[0] for m in METHODS]
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(labels))
        if unknown:
            parser.error(f"--only: unknown method(s) {unknown}; known: {', '.join(labels)}")
        labels = [label for label in labels if label in args.only.split(",")]
    elif args.quick:
        labels = list(QUICK_METHODS)

    from importlib import metadata

    from workbench.fronts.pareto import non_dominated

    print("PEFT methods on one front: SFT on `sort` from the "
          f"{'fast test' if args.quick else 'default tiny'} base")  # fmt: skip
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; python "
          f"{platform.python_version()}, torch {metadata.version('torch')}, peft "
          f"{metadata.version('peft')}")  # fmt: skip
    print(f"command: python benchmarks/peft_front.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{len(labels)} methods x {seeds} seed(s), {steps} steps of 16 rows each")
    print(f"load average at start: {load_average()}")
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    failed: dict[str, str] = {}
    for seed in range(seeds):
        for label in labels:
            if label in failed:
                continue
            figures = run_method(label, seed, steps, args.quick)
            if figures["status"] != "FINISHED":
                failed[label] = figures.get("error", figures["status"])
                print(f"  {label} seed {seed}: FAILED ({failed[label]})", flush=True)
                continue
            runs[label].append(figures)
            print(f"  {label} seed {seed}: exact match {figures['exact_match']:.3f}, "
                  f"{figures['wall_s']:.0f} s", flush=True)  # fmt: skip
    done = [label for label in labels if label not in failed and runs[label]]
    points = [[median_of(runs[label], "exact_match"), median_of(runs[label], "trainable"),
               median_of(runs[label], "peak_mb")] for label in done]  # fmt: skip
    front = non_dominated(points, ["max", "min", "min"]) if points else []

    print()
    base = median_of(runs[done[0]], "base_exact_match") if done else float("nan")
    print(f"held-out exact match of the base at step 0: {base:.3f}")
    header = (f"{'method':<15}{'exact match':>22}{'NLL':>8}{'trainable':>12}{'peak MB':>9}"
              f"{'process MB':>11}{'step s':>8}{'tokens/s':>10}  front")  # fmt: skip
    print(header)
    for label, on_front in zip(done, front):
        r = runs[label]
        values = [x["exact_match"] for x in r]
        em = f"{statistics.median(values):.3f}" + (
            f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
        )
        print(f"{label:<15}{em:>22}{median_of(r, 'heldout_nll'):>8.3f}"
              f"{int(median_of(r, 'trainable')):>12,}{median_of(r, 'peak_mb'):>9.1f}"
              f"{median_of(r, 'process_peak_mb'):>11.0f}{median_of(r, 'step_s'):>8.3f}"
              f"{median_of(r, 'tokens_per_s'):>10.0f}  {'yes' if on_front else ''}")  # fmt: skip
    for label, error in failed.items():
        print(f"{label:<15}failed: {error}")
    print()
    print("exact match: median over seeds (min-max); NLL: held-out NLL of the answers; peak MB: "
          "training's peak above the loaded model (perf/peak_mem_mb); process MB: the process's "
          "lifetime peak; step s and tokens/s: medians after the first two steps")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s; load average at end: {load_average()}")
    print(f"BENCH peft_methods_compared {len(done)} methods target=>={len(labels)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
