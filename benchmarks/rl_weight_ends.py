"""Do GRPO's reward weights steer the policy? The two ends of the weight range over seeds.

    python benchmarks/rl_weight_ends.py            # 3 seeds x 2 ends, 40 steps each (about 10 min
                                                   # on 2 cores)
    python benchmarks/rl_weight_ends.py --quick    # 1 seed, 3 steps: a smoke test of the script

GRPO (LoRA on the default tiny base, 16 prompts x 8 completions a step) on the built-in
`reverse` task with two conflicting rewards: `correct` (the exact answer) and `brevity`
(which pays most for saying nothing). One run at each end of the weight range,
(correct, brevity) = (1, 0) and (0, 1), for each seed; each run's held-out rewards at the
end. The claim: the ends separate on both rewards by more than twice their spread over the
seeds (the larger of the two ends' standard deviations): the table gives each reward's gap
and spread, the headline the smaller ratio, ``BENCH rl_ends_gap_over_spread_min <gap / spread>
x target=>2``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

REWARDS = ("correct", "brevity")
ENDS = ((1.0, 0.0), (0.0, 1.0))


def spec_dict(weights: tuple[float, float], seed: int, steps: int, uri: str) -> dict:
    objectives = [
        {"name": name, "direction": "max", "source": f"reward:{name}", "weight": w}
        for name, w in zip(REWARDS, weights)
    ]
    return {
        "model": {"name": "tiny"},
        "data": {"source": "reverse", "train_size": 1000, "eval_size": 48},
        "adapter": {"name": "lora", "r": 16, "alpha": 32},
        "method": {"name": "grpo", "group_size": 8, "max_completion_length": 12},
        "objectives": objectives,
        "optimizer": {"name": "adamw", "lr": 0.002},
        "train": {"steps": steps, "batch_size": 16, "eval_every": steps, "seed": seed},
        "eval": {"max_new_tokens": 12},
        "tracking": {"experiment": "rl-weight-ends", "uri": uri},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 steps (a smoke test)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per end (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 40)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    steps = args.steps or (3 if args.quick else 40)

    import torch

    import workbench

    results: dict[tuple[float, float], list[dict[str, float]]] = {end: [] for end in ENDS}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for seed in range(seeds):
            for end in ENDS:
                spec = workbench.RunSpec.parse(spec_dict(end, seed, steps, uri))
                result = workbench.run(spec, log=lambda *a: None)
                if result.status != "FINISHED":
                    print(f"error: run {end} seed {seed} ended {result.status}", file=sys.stderr)
                    return 1
                results[end].append(result.objectives)
    seconds = time.perf_counter() - started

    print(
        f"GRPO on reverse, weights (correct, brevity) at both ends, "
        f"{seeds} seed(s) x {steps} steps; "
        f"torch {torch.__version__}, python {platform.python_version()}; {seconds:.0f} s; "
        f"load average {load_average()}"
    )
    print()
    print(f"{'weights':<12}{'seed':>6}" + "".join(f"{name:>10}" for name in REWARDS))
    for end in ENDS:
        for seed, objectives in enumerate(results[end]):
            print(
                f"{str(end):<12}{seed:>6}"
                + "".join(f"{objectives[name]:>10.3f}" for name in REWARDS)
            )
    print()
    figures = []
    for name in REWARDS:
        values = [[o[name] for o in results[end]] for end in ENDS]
        gap = abs(statistics.mean(values[0]) - statistics.mean(values[1]))
        spread = max(statistics.stdev(v) if len(v) > 1 else 0.0 for v in values)
        ratio = gap / spread if spread > 0 else float("inf")
        print(
            f"{name}: means {statistics.mean(values[0]):.3f} vs {statistics.mean(values[1]):.3f}, "
            f"gap {gap:.3f}, spread (largest std over seeds) {spread:.3f}, gap / spread "
            + (f"{ratio:.2f}" if ratio != float("inf") else "unbounded (no spread)")
        )
        figures.append((name, ratio))
    print()
    # The headline is the weaker reward's separation; a reward whose ends did not vary over the
    # seeds at all (spread 0) separates without bound and only counts if no other reward varied.
    finite = [ratio for _, ratio in figures if ratio != float("inf")]
    headline = min(finite) if finite else 1e9
    print(f"BENCH rl_ends_gap_over_spread_min {headline:.2f} x target=>2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
