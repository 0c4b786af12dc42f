"""A class at once against one tracking server: `workbench board` on PostgreSQL, then the same
load against an MLflow server on sqlite. Is every point stored, once, and how long does a
logged batch wait?

    python benchmarks/store_load.py            # 30 students (about 13 minutes on 2 shared cores)
    python benchmarks/store_load.py --quick    # 4 students, 20 steps: a CI smoke test

Each simulated student is a process that, once every student is ready, logs
- a training run: ``--steps`` steps of 4 metrics (``train/loss``, ``train/answer``,
  ``train/brevity``, ``perf/step_s``), sent in batches of ``--batch-steps`` steps with
  ``log_batch(..., synchronous=True)``, as the workbench's recorder sends what a flush
  interval of training produced (it retries a batch that failed, keeping its points, and so
  does a student here); then
- a 6-point weight sweep: a parent run and 6 child runs of the same shape, one after another
  (``workbench sweep``'s default), the parent ending with its front metrics.
Every run ends FINISHED. Students connect with ``workbench.tracking.connect`` (the client
settings a real run gets). Both servers run ``--workers`` uvicorn workers on this machine.

Then each backend is read back through the MLflow client: every metric's history, per run,
against what was sent. ``lost``: (run, metric, step) points sent but not stored;
``duplicated``: stored rows beyond one per (run, metric, step); ``running``: runs not ended.
Latency: the wall time of each ``log_batch`` call as a student saw it (retries included),
p50 and p95 over all batches of all students. The table comes first, then the headline
figures as ``BENCH <figure> <value> <unit> target=<target>``; the latency target is the
recorder's flush interval (2 s): a batch slower than that makes a run's logging fall behind.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

METRICS = ("train/loss", "train/answer", "train/brevity", "perf/step_s")
SWEEP_POINTS = 6
EXPERIMENT = "class-load"
FLUSH_INTERVAL_MS = 2000.0  # the recorder's default flush_every_s: the latency target
STARTUP_TIMEOUT_S = 600.0  # a board's first start creates MLflow's tables (~10-50 s on 2 cores)
RETRIES = 20  # a student re-sends a failed batch (as the recorder does) this many times at most


# ---------------------------------------------------------------------------------------
# one student


def _log_run(
    client, run_id: str, steps: int, batch_steps: int, latencies: list[float], failures: list[str]
) -> None:
    from mlflow.entities import Metric

    for first in range(0, steps, batch_steps):
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(step * 0.001 + i), now, step)
            for step in range(first, min(first + batch_steps, steps))
            for i, key in enumerate(METRICS)
        ]
        started = time.perf_counter()
        for attempt in range(RETRIES):
            try:
                client.log_batch(run_id, metrics=batch, synchronous=True)
                break
            except Exception as err:  # the recorder keeps the points and sends them again
                failures.append(f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")
                time.sleep(min(2.0, 0.1 * 2**attempt))
        latencies.append((time.perf_counter() - started) * 1000)


def student(
    index: int, uri: str, experiment_id: str, steps: int, batch_steps: int, start_line, results
) -> None:
    """One student's work (in its own process): a run, then a sweep; results onto the queue."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from workbench import tracking

    latencies: list[float] = []
    failures: list[str] = []
    runs: list[str] = []  # the runs that log a training history
    parents: list[str] = []
    try:
        client = tracking.connect(uri)
        start_line.wait(timeout=STARTUP_TIMEOUT_S)  # every student imported and connected
        run = client.create_run(experiment_id, run_name=f"student {index}")
        runs.append(run.info.run_id)
        _log_run(client, run.info.run_id, steps, batch_steps, latencies, failures)
        client.set_terminated(run.info.run_id, "FINISHED")
        parent = client.create_run(
            experiment_id, run_name=f"student {index} sweep", tags={"workbench.kind": "sweep"}
        )
        parents.append(parent.info.run_id)
        for point in range(SWEEP_POINTS):
            child = client.create_run(
                experiment_id,
                run_name=f"w={point / (SWEEP_POINTS - 1):.1f}",
                tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id},
            )
            runs.append(child.info.run_id)
            _log_run(client, child.info.run_id, steps, batch_steps, latencies, failures)
            client.set_terminated(child.info.run_id, "FINISHED")
        client.log_metric(parent.info.run_id, "sweep/hypervolume", 1.0 + index, step=0)
        client.set_terminated(parent.info.run_id, "FINISHED")
        error = None
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    results.put(
        {
            "index": index,
            "latencies": latencies,
            "failures": failures,
            "runs": runs,
            "parents": parents,
            "error": error,
        }
    )


# ---------------------------------------------------------------------------------------
# the servers


@contextlib.contextmanager
def board_server(folder: Path, args, notes: list[str]):
    """``workbench board --data folder/board`` in the background, as a teacher starts it; its
    tracking URI. Stopped by SIGTERM; a non-zero exit is noted. ``--board-uri``: a board
    already running there instead."""
    if args.board_uri:
        yield args.board_uri
        return
    workers = args.workers
    out = folder / "board.out"
    with open(out, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workbench.cli",
                "board",
                "--data",
                str(folder / "board"),
                "--port",
                "0",
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (
            found := re.search(r"MLFLOW_TRACKING_URI=(\S+)", out.read_text(errors="replace"))
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the board did not start; it printed:\n{out.read_text(errors='replace')}"
                )
            time.sleep(0.5)
        yield found[1]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=300)
        if code:
            notes.append(f"board: `workbench board` exited {code} on SIGTERM")


@contextlib.contextmanager
def sqlite_server(folder: Path, args, notes: list[str]):
    """``mlflow server`` on a sqlite file, with as many workers as the board's."""
    from workbench.serving.servers import mlflow_server

    server = mlflow_server(
        "MLflow on sqlite",
        f"sqlite:///{folder / 'mlflow.db'}",
        host="127.0.0.1",
        port=0,
        workers=args.workers,
        log_path=folder / "mlflow.log",
        options=["--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")],
        startup_timeout=STARTUP_TIMEOUT_S,
    )
    with server:
        yield server.url


BACKENDS = {"board": board_server, "sqlite": sqlite_server}


# ---------------------------------------------------------------------------------------
# one backend under load, then read back


def run_load(uri: str, students: int, steps: int, batch_steps: int) -> dict:
    from workbench import tracking

    client = tracking.connect(uri)
    experiment_id = client.create_experiment(
        f"{EXPERIMENT}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    # Spawned, not forked: a fork would share this process's pooled HTTP connections.
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(students + 1), context.Queue()
    processes = [
        context.Process(
            target=student, args=(i, uri, experiment_id, steps, batch_steps, start_line, results)
        )
        for i in range(students)
    ]
    for process in processes:
        process.start()
    spawned = time.monotonic()
    start_line.wait(timeout=STARTUP_TIMEOUT_S)  # they begin together, once all are connected
    started = time.monotonic()
    done = [results.get(timeout=STARTUP_TIMEOUT_S + 3600) for _ in processes]
    wall = time.monotonic() - started
    print(
        f"  {students} students started in {started - spawned:.1f} s, logged in {wall:.1f} s",
        flush=True,
    )
    for process in processes:
        process.join(timeout=60)
    errors = [d["error"] for d in done if d["error"]]
    latencies = sorted(x for d in done for x in d["latencies"])
    failures = [f for d in done for f in d["failures"]]
    counts = read_back(client, experiment_id, [r for d in done for r in d["runs"]], steps)
    return {
        "wall_s": wall,
        "latencies": latencies,
        "failures": failures,
        "errors": errors,
        "runs_expected": students * (2 + SWEEP_POINTS),
        **counts,
        "points_expected": students * (1 + SWEEP_POINTS) * steps * len(METRICS),
    }


def read_back(client, experiment_id: str, run_ids: list[str], steps: int) -> dict:
    """The training runs' stored metric histories against what was sent; the runs not ended."""
    stored = lost = duplicated = 0
    for run_id in run_ids:
        for key in METRICS:
            history = client.get_metric_history(run_id, key)
            stored += len(history)
            seen = {m.step for m in history}
            lost += len(set(range(steps)) - seen)
            duplicated += len(history) - len(seen)
    every = client.search_runs([experiment_id], max_results=50000)
    running = sum(r.info.status == "RUNNING" for r in every)
    return {
        "points_stored": stored,
        "points_lost": lost,
        "points_duplicated": duplicated,
        "runs_stored": len(every),
        "runs_running": running,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


# ---------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import mlflow
    import psycopg2

    from workbench.serving.board.local_postgres import bin_dir

    postgres = re.search(
        r"\d+\.\d+",
        subprocess.run(
            [str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True
        ).stdout,
    )[0]
    return {
        "mlflow": mlflow.__version__,
        "PostgreSQL": postgres,
        "psycopg2": psycopg2.__version__.split()[0],
        "python": platform.python_version(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 students, 20 steps (CI)")
    parser.add_argument("--students", type=int, help="student processes (default 30; quick 4)")
    parser.add_argument("--steps", type=int, help="steps per run (default 200; quick 20)")
    parser.add_argument(
        "--batch-steps", type=int, default=20, help="steps per logged batch (default 20: 80 points)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn workers of each server (default 2)"
    )
    parser.add_argument(
        "--backends", default="board,sqlite", help="which to load (default board,sqlite)"
    )
    parser.add_argument(
        "--board-uri",
        help="load a board already running at this tracking URI instead of starting one",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run ended
    students = args.students or (4 if args.quick else 30)
    steps = args.steps or (20 if args.quick else 200)
    backends = args.backends.split(",")

    print("A class at once against one tracking server: workbench board (PostgreSQL) vs sqlite")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    command_args = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: python benchmarks/store_load.py {command_args}".rstrip())
    print(
        f"students: {students}, each a {steps}-step run of {len(METRICS)} metrics and a "
        f"{SWEEP_POINTS}-point sweep ({1 + SWEEP_POINTS} runs x {steps * len(METRICS)} points, "
        f"batches of {args.batch_steps} steps); server workers: {args.workers}"
    )
    print(f"load average at start: {load_average()}")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(
            f"--backends: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(BACKENDS)}"
        )
    rows, notes = {}, []
    folder = Path(tempfile.mkdtemp(prefix="store-load-"))
    folder.chmod(0o755)  # as root, the board's PostgreSQL user must reach its data folder
    try:
        for backend in backends:
            data = folder / backend
            data.mkdir(mode=0o755)
            started = time.monotonic()
            with BACKENDS[backend](data, args, notes) as uri:
                ready = time.monotonic()
                rows[backend] = run_load(uri, students, steps, args.batch_steps)
                loaded = time.monotonic()
            print(
                f"{backend}: server ready in {ready - started:.1f} s, load and read-back "
                f"{loaded - ready:.1f} s, stopped in {time.monotonic() - loaded:.1f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(rows, notes)
    return 0


def report(rows: dict, notes: list[str]) -> None:
    columns = [
        "backend",
        "runs",
        "running",
        "points sent",
        "stored",
        "lost",
        "duplicated",
        "batches",
        "failed sends",
        "p50 ms",
        "p95 ms",
        "max ms",
        "wall s",
        "points/s",
    ]
    table = []
    for backend, r in rows.items():
        lat = r["latencies"]
        table.append(
            [
                backend,
                f"{r['runs_stored']}/{r['runs_expected']}",
                r["runs_running"],
                r["points_expected"],
                r["points_stored"],
                r["points_lost"],
                r["points_duplicated"],
                len(lat),
                len(r["failures"]),
                f"{percentile(lat, 50):.1f}",
                f"{percentile(lat, 95):.1f}",
                f"{max(lat) if lat else float('nan'):.1f}",
                f"{r['wall_s']:.1f}",
                f"{r['points_stored'] / r['wall_s']:.0f}",
            ]
        )
    widths = [max(len(str(c)), *(len(str(row[i])) for row in table)) for i, c in enumerate(columns)]
    print()
    print("  ".join(str(c).rjust(w) for c, w in zip(columns, widths)))
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for row in table:
        print("  ".join(str(v).rjust(w) for v, w in zip(row, widths)))
    print(f"\nload average at end: {load_average()}")
    for backend, r in rows.items():
        for error in r["errors"][:5]:
            print(f"{backend}: a student failed: {error}")
        if r["failures"]:
            print(
                f"{backend}: {len(r['failures'])} failed send(s), re-sent; "
                f"first: {r['failures'][0]}"
            )
    for note in notes:
        print(note)
    print()
    for backend, r in rows.items():
        print(f"BENCH {backend}_points_lost {r['points_lost']} points target=0")
        print(f"BENCH {backend}_points_duplicated {r['points_duplicated']} points target=0")
        print(f"BENCH {backend}_runs_left_running {r['runs_running']} runs target=0")
        print(
            f"BENCH {backend}_batch_latency_p50_ms {percentile(r['latencies'], 50):.1f} ms "
            f"target=<={FLUSH_INTERVAL_MS:.0f}"
        )
        print(
            f"BENCH {backend}_batch_latency_p95_ms {percentile(r['latencies'], 95):.1f} ms "
            f"target=<={FLUSH_INTERVAL_MS:.0f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
