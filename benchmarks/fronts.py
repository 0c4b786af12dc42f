"""Five ways to build a Pareto front (``workbench.fronts.builders``), compared on one task.

    python benchmarks/fronts.py            # full run (about 20 minutes on 2 shared CPU cores)
    python benchmarks/fronts.py --quick    # the fast test base, 2 steps, 2 points, one
                                           # seed: a CI smoke test (its figures mean little)

The task is ``order`` on the tiny base: correctness (share of the sorted digits produced in
order, max) against length (items generated, min), whose conflict is the README's demo; the
hypervolume is against the task's fixed reference point (correctness 0, length 14). Each
builder runs in this process against a temporary MLflow store:

- ``sweep``: the reference, ``--points`` (11) mo-sft runs of ``--steps`` steps each;
- ``conditioned``: one conditioned-sft run of ``--conditioned-steps`` steps (default 5x
  ``--steps``, under half the sweep's total), evaluated at the same ``--points`` weights;
- ``merging``: two mo-sft runs of ``--steps`` at weights 0.9/0.1, linearly merged at
  ``--points`` coefficients;
- ``search`` and ``mgda``: ``--few-points`` (5) trials / mgda-sft runs of ``--steps``, first
  seed only (they cost about as much as a sweep: a full set for every seed would not fit the
  time budget).

Per builder and seed it prints the training runs, their optimizer steps, the wall-clock
seconds of the whole study (training and evaluation) and the hypervolume, also as a ratio
to that seed's sweep. The headline is the best median ratio (over ``--seeds`` seeds) of a
builder that trains at most two models with at most half the sweep's steps, in the house
convention ``BENCH <figure> <value> <unit> target=<target>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.models.bases import FAST_TINY_SHAPE  # noqa: E402  (the checkout's own package)

# The smoke test's base: the built-in `tiny-fast` shape (seconds to build).
QUICK_TINY = dict(FAST_TINY_SHAPE)
# Builders run for every seed, and those too costly for more than the first.
EVERY_SEED = ("sweep", "conditioned", "merging")
FIRST_SEED_ONLY = ("search", "mgda")
TARGET_RATIO = 0.9


def base_spec(args, seed: int) -> dict:
    spec = {
        "data": {"source": "order"},
        "method": "mo-sft",
        "train": {"steps": args.steps, "eval_every": args.steps, "seed": seed},
        "tracking": {"experiment": f"fronts-seed{seed}"},
    }
    if args.quick:
        spec["model"] = {"name": "tiny", "tiny": dict(QUICK_TINY)}
        spec["data"].update(train_size=32, eval_size=4)
        spec["train"]["batch_size"] = 4
        spec["eval"] = {"max_new_tokens": 8}
    return spec


def run_builder(name: str, args, seed: int) -> dict:
    from workbench.fronts.builders import build_front

    spec = base_spec(args, seed)
    points = args.points if name in EVERY_SEED else args.few_points
    if name == "conditioned":
        spec["train"].update(steps=args.conditioned_steps, eval_every=args.conditioned_steps)
    built = build_front(name, spec, points, seed=seed, log=lambda *a: None)
    return {
        "builder": name,
        "seed": seed,
        "points": points,
        "runs": len(built.training_run_ids),
        "steps": built.training_steps,
        "seconds": built.seconds,
        "front_size": int(built.front.mask.sum()),
        "hypervolume": built.hypervolume,
    }


def print_table(rows: list[dict], sweep_hv: dict[int, float]) -> None:
    header = (
        f"{'builder':<12} {'seed':>4} {'points':>6} {'runs':>4} {'steps':>6} {'seconds':>8} "
        f"{'front':>5} {'hypervolume':>11} {'/ sweep':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r["hypervolume"] / sweep_hv[r["seed"]] if sweep_hv.get(r["seed"]) else float("nan")
        print(
            f"{r['builder']:<12} {r['seed']:>4} {r['points']:>6} {r['runs']:>4} {r['steps']:>6} "
            f"{r['seconds']:>8.1f} {r['front_size']:>5} {r['hypervolume']:>11.3f} {ratio:>7.3f}"
        )


def median_ratios(rows: list[dict], sweep_hv: dict[int, float]) -> dict[str, float]:
    by_builder: dict[str, list[float]] = {}
    for r in rows:
        if r["builder"] != "sweep" and sweep_hv.get(r["seed"]):
            by_builder.setdefault(r["builder"], []).append(r["hypervolume"] / sweep_hv[r["seed"]])
    return {name: statistics.median(values) for name, values in by_builder.items()}


def qualifies(rows: list[dict], name: str) -> bool:
    """Trains at most two models with at most half the sweep's steps, in every seed."""
    sweep_steps = {r["seed"]: r["steps"] for r in rows if r["builder"] == "sweep"}
    mine = [r for r in rows if r["builder"] == name]
    return bool(mine) and all(
        r["runs"] <= 2 and r["steps"] <= 0.5 * sweep_steps[r["seed"]] for r in mine
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast base, few steps, one seed (CI)")
    parser.add_argument(
        "--steps", type=int, help="steps per sweep, merging, search and mgda run (100)"
    )
    parser.add_argument(
        "--conditioned-steps", type=int, help="steps of the conditioned run (5x --steps)"
    )
    parser.add_argument(
        "--points", type=int, help="front points of sweep, conditioned, merging (11)"
    )
    parser.add_argument("--few-points", type=int, help="trials of search, runs of mgda (5)")
    parser.add_argument("--seeds", type=int, help="seeds (3)")
    args = parser.parse_args(argv)
    defaults = (
        {"steps": 2, "points": 2, "few_points": 2, "seeds": 1}
        if args.quick
        else {"steps": 100, "points": 11, "few_points": 5, "seeds": 3}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.conditioned_steps is None:
        args.conditioned_steps = 5 * args.steps

    import mlflow
    import torch
    import transformers

    import workbench

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}; "
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, mlflow {mlflow.__version__}, "
        f"workbench {workbench.__version__}"
    )
    print(f"load average at start: {load_average()}")
    print(
        f"task order, {args.steps} steps per run (conditioned: {args.conditioned_steps}), "
        f"{args.points} points ({args.few_points} for search and mgda), seeds 0..{args.seeds - 1}\n"
    )
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(store) / 'mlflow.db'}"
        if args.quick:
            os.environ.setdefault("WORKBENCH_CACHE", str(Path(store) / "cache"))
        for seed in range(args.seeds):
            names = EVERY_SEED + (FIRST_SEED_ONLY if seed == 0 else ())
            for name in names:
                rows.append(run_builder(name, args, seed))
                row = rows[-1]  # progress on stderr, so a long run shows where it is
                print(
                    f"{name} seed {seed}: hypervolume {row['hypervolume']:.3f}, "
                    f"{row['seconds']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    sweep_hv = {r["seed"]: r["hypervolume"] for r in rows if r["builder"] == "sweep"}
    print_table(rows, sweep_hv)
    ratios = median_ratios(rows, sweep_hv)
    print(
        "\nmedian hypervolume / sweep over seeds: "
        + ", ".join(f"{name} {value:.3f}" for name, value in ratios.items())
    )
    print(f"total {time.perf_counter() - started:.0f} s; load average at end: {load_average()}")
    eligible = {
        name: ratios[name]
        for name in ("conditioned", "merging")
        if name in ratios and qualifies(rows, name)
    }
    for name in ("conditioned", "merging"):
        if name in ratios:
            print(f"BENCH hv_ratio_{name}_vs_sweep {ratios[name]:.3f} x target=>={TARGET_RATIO}")
    best = max(eligible.values()) if eligible else 0.0
    print(f"BENCH hv_ratio_two_models_vs_sweep {best:.3f} x target=>={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
