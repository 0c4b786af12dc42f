"""Does GRPO (or RAFT) raise held-out exact match on a built-in task in minutes on CPU?

    python benchmarks/rl_task_gain.py            # 3 seeds x 300 steps on `arithmetic`
    python benchmarks/rl_task_gain.py --quick    # 1 seed, 3 steps: a smoke test of the script
    python benchmarks/rl_task_gain.py --task reverse --steps 150 --lr 3e-4   # docs/methods.md's
                                                                               # recipe
    python benchmarks/rl_task_gain.py --method raft --task reverse --steps 150 --lr 3e-4
    python benchmarks/rl_task_gain.py --closeness 0.5 --lr 3e-4 --steps 600   # a shaped reward
                                                                               # beside `correct`
    python benchmarks/rl_task_gain.py --pretrain-steps 1600                    # a longer-pretrained
                                                                               # tiny base

GRPO from the default tiny base (`model: {name: tiny}`) on `arithmetic` ("add a b:", a and b
below 50; every sum is one token of the base's vocabulary) with the `correct` reward (the
exact answer) alone: a full fine-tune, 32 prompts x 16 completions a step, completions of at
most 2 tokens (the answer and the end token), temperature 1, beta 0, one optimizer step per
batch of samples. The task's own held-out evaluation (48 prompts never seen in training or
pretraining, greedy decoding) runs at step 0 (the base) and every `--eval-every` steps; the
table gives held-out exact match at each evaluation for each seed. The claim the issue asks
for: the run's end is at least 10 points above its step-0 evaluation,
``BENCH grpo_arithmetic_exact_match_gain_points <end - start, median over seeds> points
target=>10``, with the spread over the seeds (0, 1, 2 by default: the seed of the prompts'
order and of the sampling) printed beside it.

``--method raft`` runs RAFT (reward-ranked fine-tuning) under the same settings: each step
fine-tunes on the best of each prompt's 16 samples, kept only when right (``min_total`` 0.5);
its BENCH line is ``raft_<task>_exact_match_gain_points``.

``--closeness W`` trains on two rewards, `correct` with weight 1 - W and a partial-credit
reward with weight W, registered here through ``workbench.register_reward`` (the extension
point a user's reward takes): ``max(0, 1 - |answer - reference| / 10)``, so a sampled sum off
by 3 earns 0.7 and every group has a graded signal rather than mostly all-zero rewards.
``--task reverse`` (or `sort`) runs the same on another built-in task, with completions of
up to 12 tokens (the answer's items and the end token); its BENCH line is named after it.
``--pretrain-steps N`` starts from the tiny base pretrained for N steps instead of the
default 800 (built once and cached like the default).
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

CLOSENESS_SPAN = 10  # the partial-credit reward is 0 from this far off the reference sum


def closeness(completion: str, example: dict) -> float:
    """Partial credit for a sum near the reference: 1 at it, falling linearly to 0 at 10 off."""
    try:
        guess, reference = int(completion.strip()), int(str(example["answer"]).strip())
    except ValueError:
        return 0.0
    return max(0.0, 1.0 - abs(guess - reference) / CLOSENESS_SPAN)


# What differs between the two methods: GRPO without a KL penalty, one optimizer step per batch
# of samples; RAFT fine-tunes on the best sample of each group, kept only when right.
METHOD_SETTINGS = {"grpo": {"beta": 0.0, "num_iterations": 1}, "raft": {"min_total": 0.5}}

# Completion budget per task: an arithmetic answer is one token of the base's vocabulary.
COMPLETION_TOKENS = {"arithmetic": 2}


def spec_dict(
    seed: int,
    steps: int,
    lr: float,
    eval_every: int,
    uri: str,
    closeness_weight: float = 0.0,
    pretrain_steps: int | None = None,
    task: str = "arithmetic",
    method: str = "grpo",
) -> dict:
    rewards = [
        {
            "name": "correct",
            "direction": "max",
            "source": "reward:correct",
            "weight": 1.0 - closeness_weight,
        }
    ]
    if closeness_weight:
        rewards.append(
            {
                "name": "closeness",
                "direction": "max",
                "source": "reward:closeness",
                "weight": closeness_weight,
            }
        )
    tiny = {} if pretrain_steps is None else {"tiny": {"pretrain_steps": pretrain_steps}}
    return {
        "model": {"name": "tiny", **tiny},
        "data": {"source": task, "train_size": 2000, "eval_size": 48},
        "adapter": {"name": "full"},
        "method": {
            "name": method,
            "group_size": 16,
            "max_completion_length": COMPLETION_TOKENS.get(task, 12),
            "temperature": 1.0,
            **METHOD_SETTINGS[method],
        },
        "objectives": [
            *rewards,
            {"name": "exact_match", "direction": "max", "source": "metric:exact_match"},
        ],
        "optimizer": {"name": "adamw", "lr": lr},
        "train": {"steps": steps, "batch_size": 32, "eval_every": eval_every, "seed": seed},
        "eval": {"max_new_tokens": 6},
        "tracking": {"experiment": "rl-task-gain", "uri": uri},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 steps (a smoke test)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; --quick 1)")
    parser.add_argument(
        "--method", choices=sorted(METHOD_SETTINGS), default="grpo", help="default grpo"
    )
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 300)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="held-out evaluation interval (default steps/6)",
    )
    parser.add_argument(
        "--closeness",
        type=float,
        default=0.0,
        help="weight of the partial-credit reward beside `correct` (default 0: `correct` alone)",
    )
    parser.add_argument(
        "--task",
        default="arithmetic",
        choices=("arithmetic", "reverse", "sort"),
        help="built-in task (default arithmetic)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="the tiny base's pretraining steps (default 800)",
    )
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 300)
    args.seeds = args.seeds or (1 if args.quick else 3)
    eval_every = args.eval_every or max(1, steps // 6)

    import torch
    from mlflow.tracking import MlflowClient

    import workbench

    if not 0 <= args.closeness < 1:
        parser.error("--closeness is a weight in [0, 1)")
    if args.closeness:
        workbench.register_reward("closeness", closeness)
    trajectories: list[list[tuple[int, float]]] = []
    training_rewards: list[
        tuple[float, float]
    ] = []  # per seed: mean reward/total, first and last 20 steps
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for seed in range(args.seeds):
            spec = workbench.RunSpec.parse(
                spec_dict(
                    seed,
                    steps,
                    args.lr,
                    eval_every,
                    uri,
                    args.closeness,
                    args.pretrain_steps,
                    args.task,
                    args.method,
                )
            )
            result = workbench.run(spec, log=lambda *a: None)
            if result.status != "FINISHED":
                print(f"error: seed {seed} ended {result.status}", file=sys.stderr)
                return 1
            trajectories.append(
                [(step, values["exact_match"]) for step, values in result.trajectory]
            )
            history = [
                m.value
                for m in sorted(
                    MlflowClient(tracking_uri=uri).get_metric_history(
                        result.run_id, "reward/total"
                    ),
                    key=lambda m: m.step,
                )
            ]
            window = history[:20], history[-20:]
            training_rewards.append(
                tuple(statistics.mean(w) if w else float("nan") for w in window)
            )
    seconds = time.perf_counter() - started

    rewards = (
        "correct"
        if not args.closeness
        else f"correct {1 - args.closeness:g} + closeness {args.closeness:g}"
    )
    base = "" if args.pretrain_steps is None else f" pretrained {args.pretrain_steps} steps"
    print(
        f"{args.method.upper()} on {args.task} (full fine-tune of the tiny base{base}, "
        "32 prompts x 16 completions, "
        f"lr {args.lr:g}, "
        f"rewards {rewards}), "
        f"{args.seeds} seed(s) x {steps} steps; torch {torch.__version__}, "
        f"python {platform.python_version()}; "
        f"{seconds:.0f} s; load average {load_average()}"
    )
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
        print(
            f"{seed:<6}"
            + "".join(f"{by_step[s]:>10.3f}" if s in by_step else f"{'-':>10}" for s in steps_seen)
            + f"{gain:>+8.1f}"
        )
    print()
    print(
        "held-out exact match (48 prompts, greedy) at each evaluation; "
        "gain = end - step 0, in points"
    )
    print(
        "training reward (reward/total, the weighted rewards of the sampled completions), "
        "mean of the first "
        "and last 20 steps: "
        + "; ".join(
            f"seed {seed} {a:.3f} -> {b:.3f}" for seed, (a, b) in enumerate(training_rewards)
        )
    )
    seeds = ", ".join(map(str, range(args.seeds)))
    print(
        f"gain over seeds {seeds}: median {statistics.median(gains):+.1f} points "
        f"(spread {min(gains):+.1f} to {max(gains):+.1f})"
    )
    print(
        f"BENCH {args.method}_{args.task}_exact_match_gain_points "
        f"{statistics.median(gains):.1f} points target=>10"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
