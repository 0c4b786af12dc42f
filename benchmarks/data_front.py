"""Which training rows to keep: every data selector against random under a data budget.

    python benchmarks/data_front.py            # 3 seeds x (7 selectors and online-in-run at 10%
                                               # and 30%, plus all rows): 51 runs of 150 steps
    python benchmarks/data_front.py --seeds 1 --selectors random confidence s2l
    python benchmarks/data_front.py --quick    # the fast test base, 40 rows, 4 steps, 30% only,
                                               # one seed: a smoke test of the script (its
                                               # figures mean little)

The tiny base (``model: tiny``) is fine-tuned (full SFT) on one built-in task (``--task``,
default ``sort``: the base answers 0.25-0.31 of its held-out prompts by machine, so there is
room to gain; ``reverse`` it mostly knows) from ``--train-size`` training rows, of which
``--noise`` (``data.corrupt_fraction``, default 0.3) have their answers made wrong on purpose:
the setting where a selector that drops bad rows has something to find (``--noise 0`` for clean
rows). Each registered selector (``data.select``) keeps ``--budgets`` of the rows (10% and 30%),
scored with the base as loaded, and the run then trains the same ``--steps`` steps whatever its
budget (a smaller budget repeats its rows more often). At 100% every selector keeps every row,
so the rows trained on are the same for all of them: that budget is one run per seed, ``all``.
``online-in-run`` is not a selector: it keeps random rows at the budget and chooses each
step's batch during the run (``data.online_batch``, a pool 4 times the batch scored by the
model as it trains), the online selector's rule applied in the run instead of on a proxy.
Every run is its own MLflow run (a temporary store) with two objectives: the task's held-out
``--metric`` on ``--eval-size`` prompts (greedy) and ``cost:train_examples``, the data budget.

Printed: each run (selector, budget, seed, rows trained on, held-out quality, and with noise how
well the dropped rows find the corrupted ones, as the run logs them:
``data/dropped_corrupted_precision`` and ``..._recall``; seconds including the selection);
then per selector and budget the median over seeds with its spread; then the front of data
budget against quality over the medians. The headline, in the house convention
``BENCH <figure> <value> <unit> target=<target>``: ``best_selector_gain_at_30pct``, the best
selector's held-out quality at 30% minus random's at 30%, in points: per seed the paired
difference (same seed, same rows to choose from, same held-out prompts), the median over seeds,
and the selector with the highest such median. Also ``best_selector_30pct_vs_all_rows``: that
selector at 30% minus training on all rows (a small, well-chosen subset matching the full set
is 0 or more).
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

ALL_ROWS = "all"  # the 100% budget: every selector keeps every row, one run per seed
# Not a selector: random rows at the budget, each step's batch then chosen during the run from
# a drawn pool 4 times its size (data.online_batch), the online selector's rule in the run.
IN_RUN = "online-in-run"
TARGET_BUDGET = 0.3  # the headline's budget
# --quick: proxies small enough that every selector scores its rows in about a second.
QUICK_SETTINGS = {
    "s2l": {"proxy_steps": 4, "trajectory_points": 2, "clusters": 4},
    "diversity": {"clusters": 4},
    "online-batch": {"batch": 4, "pool_factor": 2},
    "distribution-matching": {"target_size": 8},
}


def run_spec(args, selector: str, budget: float, seed: int) -> dict:
    data: dict = {
        "source": args.task,
        "train_size": args.train_size,
        "eval_size": args.eval_size,
        "corrupt_fraction": args.noise,
    }
    if selector == IN_RUN:
        data["select"] = {"name": "random", "budget": budget}
        data["online_batch"] = {"pool_factor": 2 if args.quick else 4}
    elif selector != ALL_ROWS:
        settings = QUICK_SETTINGS.get(selector, {}) if args.quick else {}
        data["select"] = {"name": selector, "budget": budget, **settings}
    spec = {
        "model": {"name": "tiny"},
        "data": data,
        "method": "sft",
        "objectives": [
            {"name": "quality", "direction": "max", "source": f"metric:{args.metric}"},
            {"name": "examples", "direction": "min", "source": "cost:train_examples"},
        ],
        "optimizer": {"name": "adamw", "lr": args.lr},
        "train": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "eval_every": args.steps,
            "seed": seed,
        },
        "eval": {"max_new_tokens": args.max_new_tokens},
        "tracking": {
            "experiment": f"data-front-seed{seed}",
            "run_name": f"{selector}-{budget:g}",
            "log_model": False,
        },
    }
    if args.quick:
        spec["model"]["tiny"] = dict(FAST_TINY_SHAPE)
    return spec


def one_run(args, selector: str, budget: float, seed: int) -> dict:
    """Train one run; returns its row of the table."""
    from mlflow.tracking import MlflowClient

    import workbench
    from workbench.spec.mlflow_names import DROPPED_PRECISION_KEY, DROPPED_RECALL_KEY

    started = time.perf_counter()
    result = workbench.run(run_spec(args, selector, budget, seed), log=lambda *a: None)
    seconds = time.perf_counter() - started
    if result.status != "FINISHED":
        raise SystemExit(f"error: {selector} at {budget:g}, seed {seed}, ended {result.status}")
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    return {
        "selector": selector,
        "budget": budget,
        "seed": seed,
        "rows": int(result.objectives["examples"]),
        "quality": result.objectives["quality"],
        # The held-out quality before the first step (the pipeline evaluates at step 0).
        "base": result.trajectory[0][1]["quality"],
        "precision": metrics.get(DROPPED_PRECISION_KEY),
        "recall": metrics.get(DROPPED_RECALL_KEY),
        "seconds": seconds,
    }


def optional(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def print_runs(runs: list[dict]) -> None:
    header = (
        f"{'selector':<22}{'budget':>7}{'seed':>5}{'rows':>6}{'quality':>9}"
        f"{'drop prec':>10}{'drop rec':>9}{'seconds':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r['selector']:<22}{r['budget']:>7.0%}{r['seed']:>5}{r['rows']:>6}"
            f"{r['quality']:>9.3f}{optional(r['precision']):>10}{optional(r['recall']):>9}"
            f"{r['seconds']:>9.1f}"
        )


def by_cell(runs: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """The runs of each (selector, budget), in seed order."""
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        cells.setdefault((r["selector"], r["budget"]), []).append(r)
    return cells


def spread(values: list[float]) -> str:
    """The median, and the range over seeds where there is more than one."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.3f}"
    return f"{median:.3f} ({min(values):.3f}-{max(values):.3f})"


def print_medians(runs: list[dict], budgets: list[float]) -> None:
    cells = by_cell(runs)
    selectors = list(dict.fromkeys(r["selector"] for r in runs if r["selector"] != ALL_ROWS))
    header = f"{'selector':<22}" + "".join(f"{b:>24.0%}" for b in budgets)
    print(header)
    print("-" * len(header))
    for name in [*selectors, ALL_ROWS]:
        line = f"{name:<22}"
        for budget in budgets:
            cell = cells.get((name, budget))
            line += f"{spread([r['quality'] for r in cell]) if cell else '':>24}"
        print(line)


def paired_gains(runs: list[dict], selector: str, against: tuple[str, float]) -> list[float]:
    """Per seed, ``selector`` at the target budget minus ``against``, in points."""
    cells = by_cell(runs)
    mine = {r["seed"]: r["quality"] for r in cells.get((selector, TARGET_BUDGET), [])}
    other = {r["seed"]: r["quality"] for r in cells.get(against, [])}
    return [100 * (mine[s] - other[s]) for s in sorted(mine) if s in other]


def front_of_medians(runs: list[dict]):
    """The Pareto front (workbench's own) of data budget against median quality, one point
    per selector and budget."""
    from workbench.fronts.pareto import compute_front

    cells = by_cell(runs)
    keys = list(cells)
    points = [
        [
            statistics.median(r["rows"] for r in cells[k]),
            statistics.median(r["quality"] for r in cells[k]),
        ]
        for k in keys
    ]
    front = compute_front(points, ["min", "max"], names=["examples", "quality"])
    return [(k, p) for k, p, on in zip(keys, points, front.mask) if on]


def main(argv: list[str] | None = None) -> int:
    from workbench.spec import components

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast base, 4 steps, one seed (CI)")
    parser.add_argument("--task", default="sort", help="built-in task (default sort)")
    parser.add_argument(
        "--metric", default="exact_match", help="held-out quality: a task metric (exact_match)"
    )
    parser.add_argument(
        "--noise", type=float, default=0.3, help="share of training answers corrupted (0.3)"
    )
    parser.add_argument(
        "--selectors",
        nargs="+",
        default=[
            *(name for name, entry in components.SELECTORS.items() if entry.builtin),
            IN_RUN,
        ],
        help=f"selectors to compare (default: every built-in one and {IN_RUN}, random rows "
        "whose batches are chosen during the run; random is always run)",
    )
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        help="fractions of the training rows kept (0.1 0.3; --quick 0.3); 1.0, all rows, always "
        "runs",
    )
    parser.add_argument("--seeds", type=int, help="seeds (3; --quick 1)")
    parser.add_argument("--steps", type=int, help="training steps of every run (150; --quick 4)")
    parser.add_argument("--train-size", type=int, help="training rows to choose from (400)")
    parser.add_argument("--eval-size", type=int, help="held-out prompts (96)")
    parser.add_argument("--batch-size", type=int, help="rows per step (16; --quick 4)")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (3e-4)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="greedy tokens (24)")
    args = parser.parse_args(argv)
    defaults = (
        {
            "seeds": 1,
            "steps": 4,
            "train_size": 40,
            "eval_size": 8,
            "budgets": [TARGET_BUDGET],
            "batch_size": 4,
        }
        if args.quick
        else {
            "seeds": 3,
            "steps": 150,
            "train_size": 400,
            "eval_size": 96,
            "budgets": [0.1, 0.3],
            "batch_size": 16,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = [s for s in args.selectors if s not in components.SELECTORS and s != IN_RUN]
    if unknown:
        allowed = ", ".join([*components.SELECTORS, IN_RUN])
        parser.error(f"--selectors: unknown {unknown}; allowed: {allowed}")
    selectors = list(dict.fromkeys(["random", *args.selectors]))
    budgets = sorted({b for b in args.budgets if b < 1})
    if TARGET_BUDGET not in budgets:
        parser.error(f"--budgets: the headline needs {TARGET_BUDGET}")

    import mlflow
    import torch
    import transformers

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}; python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"mlflow {mlflow.__version__}"
    )
    print(f"load average at start: {load_average()}")
    print(
        f"task {args.task} ({args.metric} on {args.eval_size} held-out prompts), "
        f"{args.train_size} training rows with {args.noise:.0%} of answers corrupted, "
        f"{args.steps} steps x {args.batch_size} rows per run (full SFT, lr {args.lr:g}), "
        f"budgets {', '.join(f'{b:.0%}' for b in budgets)} and 100%, seeds 0..{args.seeds - 1}"
        f"{' (quick: the fast base)' if args.quick else ''}\n"
    )
    runs: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as store:
        # The environment's store wins over a spec's: every run of this script lands here.
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(store) / 'mlflow.db'}"
        for seed in range(args.seeds):
            plan = [(s, b) for b in budgets for s in selectors] + [(ALL_ROWS, 1.0)]
            for selector, budget in plan:
                runs.append(one_run(args, selector, budget, seed))
                r = runs[-1]  # progress on stderr, so a long run shows where it is
                print(
                    f"{selector} {budget:.0%} seed {seed}: {r['quality']:.3f}, "
                    f"{r['seconds']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    print_runs(runs)
    print(f"\nheld-out {args.metric}, median over seeds (range):")
    print_medians(runs, [*budgets, 1.0])
    print(f"{'the base, before training':<22}{spread([r['base'] for r in runs]):>24}")
    front = front_of_medians(runs)
    print(
        "\nfront of data budget (rows) against median quality: "
        + ", ".join(f"{s} {b:.0%} ({rows:g} rows, {q:.3f})" for (s, b), (rows, q) in front)
    )
    gains = {
        s: paired_gains(runs, s, ("random", TARGET_BUDGET)) for s in selectors if s != "random"
    }
    medians = {s: statistics.median(g) for s, g in gains.items() if g}
    print(
        f"\ngain over random at {TARGET_BUDGET:.0%} (points, median of paired seeds): "
        + ", ".join(f"{s} {m:+.1f}" for s, m in medians.items())
    )
    # With random alone there is no other selector: random is its own best, a gain of 0.
    best = max(medians, key=medians.get) if medians else "random"
    against_all = paired_gains(runs, best, (ALL_ROWS, 1.0))
    print(
        f"best selector at {TARGET_BUDGET:.0%}: {best}; against all rows "
        f"{', '.join(f'{g:+.1f}' for g in against_all)} points by seed"
    )
    print(f"total {time.perf_counter() - started:.0f} s; load average at end: {load_average()}\n")
    print(f"BENCH best_selector_gain_at_30pct {medians.get(best, 0.0):.1f} points target=>0")
    print(
        f"BENCH best_selector_30pct_vs_all_rows {statistics.median(against_all):.1f} points "
        "target=>=0"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
