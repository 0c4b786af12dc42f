"""How fast the ParetoExplorer is over a large experiment: loading its front, re-ranking it.

    python benchmarks/ui.py            # 1,000 finished runs (about a minute to make them)
    python benchmarks/ui.py --quick    # 100 runs, fewer repeats: a CI smoke test

The benchmark makes an experiment of finished runs in a temporary sqlite MLflow store, each
shaped like a workbench run (its spec's parameters, the workbench tags, training curves,
three objectives whose front has a concave part, so the explorer has front points no
weighted sum reaches to mark). Then, in this process, it times:

- **load**: building ``ParetoExplorer(experiment)`` (reading every run from the store, the
  front, its hypervolume, the weighted-sum reachability of each front point, the figure,
  the sliders): the median of ``--repeats`` builds, the first one included in the table;
- **re-rank**: one preference-weight slider move (the ranking under the new weights, the
  preferred mark moved, the top-5 table rewritten): the median of ``--moves`` moves.

Targets (the notebook UI's): load at most 2 s with 1,000 runs, a re-rank at most 50 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

EXPERIMENT = "explorer-benchmark"
OBJECTIVES = ("accuracy", "brevity", "cost")
CURVE_POINTS = 20  # training-loss points per run (the explorer reads only the latest values)


def objective_values(rng: random.Random) -> dict[str, float]:
    """Three objectives (accuracy max, brevity max, cost min) with a concave trade-off
    between the first two, plus dominated scatter below the surface."""
    angle = rng.uniform(0.0, math.pi / 2)
    slack = rng.random() ** 3  # most runs near the surface, some well inside it
    accuracy = (1.0 - 0.4 * slack) * math.cos(angle) ** 2  # concave: cos^2 + sin^2 on squares
    brevity = (1.0 - 0.4 * slack) * math.sin(angle) ** 2
    return {"accuracy": accuracy, "brevity": brevity, "cost": rng.uniform(1e5, 1e6)}


def make_runs(uri: str, n_runs: int, seed: int = 0) -> float:
    """Log ``n_runs`` finished runs into ``uri``; returns the seconds it took."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from workbench.spec import mlflow_names

    rng = random.Random(seed)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    started = time.perf_counter()
    for i in range(n_runs):
        run = client.create_run(
            experiment_id,
            run_name=f"run-{i:04d}",
            tags={
                "workbench.kind": "run",
                "workbench.method": "mo-sft",
                "workbench.adapter": "lora",
                "workbench.kernels": "none",
            },
        )
        now = int(time.time() * 1000)
        params = [
            Param(f"train.{k}", str(v))
            for k, v in {
                "lr": rng.choice([1e-4, 3e-4, 1e-3]),
                "steps": 200,
                "batch_size": 16,
                "seed": i,
            }.items()
        ]
        params += [Param(f"objectives.{name}.weight", f"{rng.random():.3f}") for name in OBJECTIVES]
        metrics = [
            Metric("train/loss", 2.0 / (1 + step), now, step) for step in range(CURVE_POINTS)
        ]
        metrics += [
            Metric(f"{mlflow_names.OBJECTIVE_PREFIX}{name}", value, now, CURVE_POINTS)
            for name, value in objective_values(rng).items()
        ]
        metrics.append(Metric("perf/tokens_per_s", rng.uniform(800, 1200), now, CURVE_POINTS))
        client.log_batch(
            run.info.run_id, metrics=metrics, params=params, tags=[RunTag("seed", str(i))]
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    return time.perf_counter() - started


def time_load(uri: str, repeats: int) -> tuple[list[float], object]:
    from workbench.widgets import ParetoExplorer

    times, explorer = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        explorer = ParetoExplorer(EXPERIMENT, uri=uri)
        times.append(time.perf_counter() - started)
    return times, explorer


def time_reranks(explorer, moves: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    times = []
    for _ in range(moves):
        slider = rng.choice(explorer.sliders)
        value = round(rng.uniform(0.0, 1.0), 2)
        if value == slider.value:
            value = round(1.0 - value, 2) if value != 0.5 else 0.45
        started = time.perf_counter()
        slider.value = value  # the slider's observer re-ranks, as a user's drag does
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="100 runs, fewer repeats (a smoke test)"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="finished runs in the experiment (default 1000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="explorer builds timed (default 5)"
    )
    parser.add_argument("--moves", type=int, default=None, help="slider moves timed (default 40)")
    args = parser.parse_args(argv)
    n_runs = args.runs or (100 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 5)
    moves = args.moves or (10 if args.quick else 40)

    import ipywidgets
    import mlflow
    import plotly

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # The store rule puts MLFLOW_TRACKING_URI first: point it at the benchmark's store.
        os.environ["MLFLOW_TRACKING_URI"] = uri
        make_s = make_runs(uri, n_runs)
        loads, explorer = time_load(uri, repeats)
        reranks = time_reranks(explorer, moves)
        front_size = int(explorer.front.mask.sum())
        unreachable = int(explorer.unreachable.sum())
        shown = len(explorer.runs)

    if shown != n_runs:
        print(f"error: the explorer shows {shown} runs, the store holds {n_runs}", file=sys.stderr)
        return 1
    load_s = statistics.median(loads)
    rerank_ms = 1000 * statistics.median(reranks)
    print(
        f"ParetoExplorer over {n_runs} finished runs ({len(OBJECTIVES)} objectives) "
        "in a sqlite store"
    )
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"plotly {plotly.__version__}, "
        f"ipywidgets {ipywidgets.__version__}; load average {load_average()}"
    )
    print(
        f"runs made in {make_s:.1f} s; front: {front_size} runs, "
        f"{unreachable} no weighted sum reaches"
    )
    print()
    print(f"{'measure':<28}{'median':>10}{'min':>10}{'max':>10}{'n':>5}")
    print(
        f"{'load (build explorer) s':<28}{load_s:>10.3f}{min(loads):>10.3f}"
        f"{max(loads):>10.3f}{len(loads):>5}"
    )
    print(
        f"{'re-rank (slider move) ms':<28}{rerank_ms:>10.2f}{1000 * min(reranks):>10.2f}"
        f"{1000 * max(reranks):>10.2f}{len(reranks):>5}"
    )
    print()
    print(f"BENCH explorer_load_{n_runs}_runs_s {load_s:.3f} s target=<=2")
    print(f"BENCH explorer_rerank_ms {rerank_ms:.2f} ms target=<=50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
