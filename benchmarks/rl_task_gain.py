"""Does GRPO raise held-out exact match on the built-in `arithmetic` task in minutes on CPU?

    python benchmarks/rl_task_gain.py            # 1 seed, 300 steps (about 5 min on 2 shared cores)
    python benchmarks/rl_task_gain.py --quick    # 3 steps: a smoke test of the script
    python benchmarks/rl_task_gain.py --seeds 3 --steps 150 --lr 3e-4

GRPO from the default tiny base (`model: {name: tiny}`) on `arithmetic` ("add a b:", a and b
below 50; every sum is one token of the base's vocabulary) with the `correct` reward (the
exact answer) alone: a full fine-tune, 32 prompts x 16 completions a step, completions of at
most 2 tokens (the answer and the end token), temperature 1, beta 0, one optimizer step per
batch of samples. The task's own held-out evaluation (48 prompts never seen in training or
pretraining, greedy decoding) runs at step 0 (the base) and every `--eval-every` steps; the
table gives held-out exact match at each evaluation for each seed. The claim the issue asks
for: the run's end is at least 10 points above its step-0 evaluation,
``BENCH grpo_arithmetic_exact_match_gain_points <end - start, mean over seeds> points target=>10``.
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


def spec_dict(seed: int, steps: int, lr: float, eval_every: int, uri: str) -> dict:
    return {"model": {"name": "tiny"}, "data": {"source": "arithmetic", "train_size": 2000, "eval_size": 48},
            "adapter": {"name": "full"},
            "method": {"name": "grpo", "group_size": 16, "max_completion_length": 2, "temperature": 1.0,
                       "beta": 0.0, "num_iterations": 1},
            "objectives": [{"name": "correct", "direction": "max", "source": "reward:correct", "weight": 1.0},
                           {"name": "exact_match", "direction": "max", "source": "metric:exact_match"}],
            "optimizer": {"name": "adamw", "lr": lr},
            "train": {"steps": steps, "batch_size": 32, "eval_every": eval_every, "seed": seed},
            "eval": {"max_new_tokens": 6}, "tracking": {"experiment": "rl-task-gain", "uri": uri}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 steps (a smoke test)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 300)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--eval-every", type=int, default=None, help="held-out evaluation interval (default steps/6)")
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 300)
    eval_every = args.eval_every or max(1, steps // 6)

    import torch

    import workbench

    trajectories: list[list[tuple[int, float]]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for seed in range(args.seeds):
            spec = workbench.RunSpec.parse(spec_dict(seed, steps, args.lr, eval_every, uri))
            result = workbench.run(spec, log=lambda *a: None)
            if result.status != "FINISHED":
                print(f"error: seed {seed} ended {result.status}", file=sys.stderr)
                return 1
            trajectories.append([(step, values["exact_match"]) for step, values in result.trajectory])
    seconds = time.perf_counter() - started

    print(f"GRPO on arithmetic (full fine-tune of the tiny base, 32 prompts x 16 completions, lr {args.lr:g}), "
          f"{args.seeds} seed(s) x {steps} steps; torch {torch.__version__}, python {platform.python_version()}; "
          f"{seconds:.0f} s; load average {load_average()}")
    print()
    steps_seen = sorted({step for trajectory in trajectories for step, _ in trajectory})
    print(f"{'seed':<6}" + "".join(f"{'step ' + str(s):>10}" for s in steps_seen) + f"{'gain':>8}")
    gains = []
    for seed, trajectory in enumerate(trajectories):
        by_step = dict(trajectory)
        if 0 not in by_step:
            print(f"error: seed {seed} has no step-0 evaluation", file=sys.stderr)
            return 1
        gain = 100 * (trajectory[-1][1] - by_step[0])
        gains.append(gain)
        print(f"{seed:<6}" + "".join(f"{by_step[s]:>10.3f}" if s in by_step else f"{'-':>10}" for s in steps_seen)
              + f"{gain:>+8.1f}")
    print()
    print("held-out exact match (48 prompts, greedy) at each evaluation; gain = end - step 0, in points")
    print(f"BENCH grpo_arithmetic_exact_match_gain_points {statistics.mean(gains):.1f} points target=>10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
