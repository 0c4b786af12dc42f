"""How fast do the listing commands answer? `workbench runs`, `status` and `front` on a local
store of 100 runs, each timed as a user types it: a fresh interpreter per command.

    python benchmarks/cli_listing.py                 # 100 runs, 5 repeats (about 40 s on 2 cores)
    python benchmarks/cli_listing.py --quick         # 20 runs, 2 repeats: a CI smoke test
    python benchmarks/cli_listing.py --source OLD_TREE --no-running
                                                     # time an older copy of the workbench

The store is a sqlite MLflow store in a temporary folder, made the way runs make it
(``tracking.start_run`` from a spec, then ``log_batch``): 4 sweeps of 25 runs each (a parent
run and 24 children), every child with 100 steps of ``train/loss``, ``train/answer``,
``train/brevity`` and ``perf/step_s`` and its objectives at 4 evaluations. Two more runs are
RUNNING, tagged with this script's own process: one with a fresh heartbeat (as a training
run keeps it, refreshed before every command), and one whose heartbeat is removed for the
last row only: its liveness must then be checked, which costs the reaper's MLflow import.
That row is left out of the headline figures.

Each command runs ``--repeats`` times; the repeats are spread (every command once, then every
command again, ...) so a moment of load on the machine does not land on one command only.
The table gives the median, fastest and slowest wall time of each; the headline figures are
the medians, as ``BENCH <figure> <value> s target=<=1.5`` (a second and a half: "about a second").
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.5
EXPERIMENT = "listing-bench"
SWEEPS = 4
STEPS = 100
METRICS = ("train/loss", "train/answer", "train/brevity", "perf/step_s")


def make_store(folder: Path, runs: int, running: bool = True):
    """A sqlite store holding ``runs`` runs in ``SWEEPS`` sweeps, plus two RUNNING runs;
    returns its URI, a client on it and the ids the commands are timed on."""
    from mlflow.entities import Metric

    from workbench import tracking
    from workbench.running import liveness
    from workbench.spec.run_spec import RunSpec

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # The environment's store wins over a spec's (the workbench's rule): point it here.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    client = tracking.connect(uri)
    spec = RunSpec.parse(
        {
            "model": "tiny",
            "data": "order",
            "method": "mo-sft",
            "train": {"steps": STEPS, "eval_every": STEPS // 4},
            "tracking": {"experiment": EXPERIMENT, "uri": uri},
        }
    )
    tracking.ensure_experiment(client, EXPERIMENT)
    per_sweep = max(2, runs // SWEEPS)
    ids: dict[str, str] = {}
    now = int(time.time() * 1000)
    for sweep in range(SWEEPS):
        parent = tracking.start_run(
            client,
            spec.updated(**{"tracking.run_name": f"sweep-{sweep}"}),
            extra_tags={"workbench.kind": "sweep"},
        )
        for child in range(per_sweep - 1):
            w = round(child / max(1, per_sweep - 2), 3)
            named = spec.updated(
                **{
                    "tracking.run_name": f"correctness={w}",
                    "objectives": [
                        {
                            "name": "correctness",
                            "direction": "max",
                            "source": "metric:exact_match",
                            "term": "answer",
                            "weight": w,
                            "reference": 0.0,
                        },
                        {
                            "name": "length",
                            "direction": "min",
                            "source": "metric:length_items",
                            "term": "brevity",
                            "weight": 1 - w,
                            "reference": 14.0,
                        },
                    ],
                }
            )
            run_id = tracking.start_run(client, named, parent_run_id=parent)
            points = [
                Metric(key, 1.0 / step + i, now, step)
                for step in range(1, STEPS + 1)
                for i, key in enumerate(METRICS)
            ]
            for step in range(0, STEPS + 1, STEPS // 4):
                points += [
                    Metric("objective/correctness", w * (0.5 + step / STEPS / 2), now, step),
                    Metric("objective/length", 3 + 10 * w * step / STEPS, now, step),
                ]
            for first in range(0, len(points), 1000):
                client.log_batch(run_id, metrics=points[first : first + 1000], synchronous=True)
            tracking.end_run(client, run_id, "FINISHED")
            ids.setdefault("finished", run_id)
        tracking.end_run(client, parent, "FINISHED")
    # Two runs in progress, both "trained" by this process (alive, so neither is reaped).
    for name in ("fresh", "silent") if running else ():
        run_id = tracking.start_run(
            client, spec.updated(**{"tracking.run_name": f"running-{name}"})
        )
        client.log_batch(
            run_id, metrics=[Metric(k, 0.5, now, 40) for k in METRICS], synchronous=True
        )
        for key, value in liveness.process_tags().items():
            client.set_tag(run_id, key, value)
        ids[name] = run_id
    return uri, client, ids


def time_command(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str | None]:
    """Wall time of one command in a fresh interpreter, and its error line if it failed (an
    older workbench given with --source may lack a command form)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.perf_counter() - started
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        return took, f"exit {result.returncode}: {lines[-1][:60]}"
    return took, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 runs, 2 repeats (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs in the store (default 100; --quick 20)")
    parser.add_argument("--repeats", type=int, help="timings per command (default 5; --quick 2)")
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="the folder holding the workbench package to time (default: this checkout)",
    )
    parser.add_argument(
        "--no-running",
        action="store_true",
        help="no RUNNING runs in the store (for an older workbench whose reaper cannot read "
        "today's process tags); the rows about running runs are left out",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (20 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 5)
    source = args.source.resolve()

    import mlflow

    from workbench.spec import mlflow_names

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()}, "
        f"mlflow {mlflow.__version__}; workbench from {source}"
    )
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        uri, client, ids = make_store(folder, runs, running=not args.no_running)
        print(
            f"store: {runs} runs in {SWEEPS} sweeps, plus {len(ids) - 1} RUNNING, made in "
            f"{time.perf_counter() - started:.0f} s"
        )
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PYTHONPATH": str(source),
            "OMP_NUM_THREADS": "1",
        }
        html = str(folder / "front.html")
        commands = {
            "runs": ["runs"],
            "runs --experiment": ["runs", "--experiment", EXPERIMENT],
            "status PREFIX (finished)": ["status", ids["finished"][:8]],
            "status PREFIX (running)": ["status", ids.get("fresh", "")[:8]],
            "status (runs in progress)": ["status"],
            "front": ["front", "--experiment", EXPERIMENT, "--html", html],
        }
        # Timed apart: a RUNNING run with no heartbeat sends `runs` through the reaper.
        silent = {"runs (a silent RUNNING run)": ["runs"]}
        if args.no_running:
            del commands["status PREFIX (running)"]
            silent = {}
        times: dict[str, list[float]] = {name: [] for name in [*commands, *silent]}
        failed: dict[str, str] = {}

        def timed(name: str, command: list[str]) -> None:
            took, error = time_command(command, env, folder)
            times[name].append(took)
            if error is not None:
                failed.setdefault(name, error)

        for _ in range(repeats):
            for name, command in commands.items():
                # As their recorders do every 5 s while they train.
                for run_id in (ids[k] for k in ("fresh", "silent") if k in ids):
                    client.set_tag(run_id, mlflow_names.HEARTBEAT_TAG, f"{time.time():.3f}")
                timed(name, command)
            for name, command in silent.items():
                client.delete_tag(ids["silent"], mlflow_names.HEARTBEAT_TAG)
                timed(name, command)
    print()
    header = f"{'command':<40} {'median s':>9} {'fastest s':>10} {'slowest s':>10}"
    print(header)
    print("-" * len(header))
    for name, values in times.items():
        figures = (
            f"{statistics.median(values):>9.2f} {min(values):>10.2f} {max(values):>10.2f}"
            if name not in failed
            else f"  fails ({failed[name]})"
        )
        print(f"{'workbench ' + name:<40} {figures}")
    print(
        f"\n{repeats} timings each, spread over the repeats; load average at end: {load_average()}"
    )

    def median(name: str) -> str:
        return "nan" if name in failed else f"{statistics.median(times[name]):.2f}"

    status = "status PREFIX (finished)" if args.no_running else "status PREFIX (running)"
    print(f"BENCH cli_status_s {median(status)} s target=<={TARGET_S}")
    print(f"BENCH cli_front_s {median('front')} s target=<={TARGET_S}")
    print(f"BENCH cli_runs_s {median('runs')} s target=<={TARGET_S}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
