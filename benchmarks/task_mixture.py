"""The cocktail effect: does a related task in the training mix help the target task?

    python benchmarks/task_mixture.py           # 3 seeds x (the mix, the target alone)
    python benchmarks/task_mixture.py --quick   # the fast test base, 2 steps, 1 seed: a smoke
                                                # test of the script (its figures mean little)

Runs ``examples/mixture_cocktail.yaml`` as a user would (``workbench run``), changing only
``train.seed`` and the store: SFT of the tiny base on a mixture of ``order`` (the target: sort
9-12 digits) and ``sort`` (4-6 numbers below 100, the same skill on other inputs), half each of
600 rows, with MFTCoder-style task balancing (``task_balance: tokens``). Beside it, the same
spec with the mixture ``{order: 1, sort: 0}`` and 300 rows: the same ``order`` rows alone (a
weight-0 task is scored, not trained on). Both take the same steps of the same batch size, so
the mix sees each ``order`` row half as often: a gain from the mix is the related task's doing,
not more target data. The target's held-out metric (``--metric``, default ``correctness`` on
``order``, greedy, the example's 48 held-out prompts) is read at the end of each run.

A third arm, ``alone-half``, trains the target alone for the mix's share of the steps: it sees
each ``order`` row as often as the mix does, so the mix against it asks whether the related
task's steps add anything to the target's own, and the mix against ``alone`` whether they are
worth what they displace.

Printed: each run; per seed the paired differences (same seed, same held-out prompts); the
median over seeds with the spread. Headline in the house convention: ``BENCH
cocktail_target_gain_points <median> points target=>0`` (the mix minus ``alone``), and
``BENCH cocktail_gain_over_equal_exposure_points`` (the mix minus ``alone-half``). No setting
of the example was chosen against these held-out prompts.
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

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mixture_cocktail.yaml"


ARMS = ("mix", "alone", "alone-half")


def load_example(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def spec_for(arm: str, seed: int, uri: str, quick: bool, example: dict, target: str) -> dict:
    """The example as shipped (``mix``), or with the ``target`` task alone for the same steps
    (``alone``) or for the mix's share of them (``alone-half``)."""
    import copy

    raw = copy.deepcopy(example)
    share = raw["data"]["mixture"][target] / sum(raw["data"]["mixture"].values())
    if arm != "mix":
        alone = {task: (1 if task == target else 0) for task in raw["data"]["mixture"]}
        raw["data"].update(mixture=alone, train_size=round(raw["data"]["train_size"] * share))
    if arm == "alone-half":
        steps = round(raw["train"]["steps"] * share)
        raw["train"].update(steps=steps, eval_every=min(raw["train"]["eval_every"], steps))
    raw["train"]["seed"] = seed
    raw["tracking"]["uri"] = uri
    if quick:
        raw["model"] = "tiny-fast"
        raw["train"].update(steps=2, eval_every=2, batch_size=4)
        raw["data"].update(train_size=16 if arm == "mix" else 8, eval_size=4)
        raw["eval"]["max_new_tokens"] = 4
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast base, 2 steps, 1 seed (CI)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; --quick 1)")
    parser.add_argument(
        "--example", type=Path, default=EXAMPLE,
        help="the mixture spec (default examples/mixture_cocktail.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "--target", default=None, help="the target task (default: the mixture's first task)"
    )
    parser.add_argument(
        "--metric", default=None, help="the target's metric (default: its task's first objective)"
    )
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    example = load_example(args.example)
    target = args.target or next(iter(example["data"]["mixture"]))

    import torch

    import workbench
    from workbench.data.tasks import TASKS

    key = f"{args.metric or TASKS[target].objectives[0].name}/{target}"

    print("The cocktail effect: the target task trained alone and in a mix with a related task")
    print(
        f"machine: {platform.platform()}, torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"command: python benchmarks/task_mixture.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"example: {args.example.name}, mixture {example['data']['mixture']}; target {key}")
    print(f"load average at start: {load_average()}")
    results: dict[tuple[str, int], float] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for seed in range(seeds):
            for label in ARMS:
                t0 = time.perf_counter()
                spec = spec_for(label, seed, uri, args.quick, example, target)
                result = workbench.run(spec, log=lambda *a: None)
                if result.status != "FINISHED" or key not in result.objectives:
                    print(
                        f"error: {label} seed {seed} ended {result.status} with objectives "
                        f"{sorted(result.objectives)} (no {key})",
                        file=sys.stderr,
                    )
                    return 1
                results[label, seed] = result.objectives[key]
                # The held-out figure before the first step (the pipeline evaluates at step 0).
                results["base", seed] = result.trajectory[0][1][key]
                print(
                    f"  {label:<11}seed {seed}: {key} {result.objectives[key]:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )

    print()
    columns = ("base", *ARMS)
    print(f"{'seed':>4}" + "".join(f"{column:>12}" for column in columns))
    for seed in range(seeds):
        print(f"{seed:>4}" + "".join(f"{results[column, seed]:>12.3f}" for column in columns))
    print()
    bench = []
    for other, name in (("alone", "cocktail_target_gain_points"),
                        ("alone-half", "cocktail_gain_over_equal_exposure_points")):  # fmt: skip
        gains = [100 * (results["mix", s] - results[other, s]) for s in range(seeds)]
        median = statistics.median(gains)
        print(
            f"{key}, the mix minus {other}: median {median:.1f} points "
            f"(spread {min(gains):.1f} to {max(gains):.1f} over seeds 0-{seeds - 1}; "
            f"per seed {', '.join(f'{g:.1f}' for g in gains)})"
        )
        bench.append(f"BENCH {name} {median:.1f} points target=>0")
    print(f"{time.perf_counter() - started:.0f} s in all; load average at end: {load_average()}\n")
    print("\n".join(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
