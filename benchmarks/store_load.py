"""A class at once against one tracking server: `workbench board` on PostgreSQL, then the same
load against an MLflow server on sqlite. Is every point stored, once, with the value sent, and
how long does a logged batch wait?

    python benchmarks/store_load.py            # 30 students (about 15 minutes on 2 shared cores)
    python benchmarks/store_load.py --quick    # 4 students, 20 steps: a CI smoke test

Each simulated student is a process that, once every student is ready, records runs the way a
training run records itself: :func:`workbench.tracking.start_run` (the spec's fields as params,
``spec.yaml`` as an artifact, through the served store) and a
:class:`~workbench.tracking.RunRecorder` (metrics buffered and sent by its thread every
``flush_every_s``, heartbeats as a tag every ``--heartbeat-s``, failed sends kept and sent
again), over a client that times each ``log_batch`` call. A student logs
- a training run: ``--steps`` steps of the metric keys a real step logs (``train/loss``,
  ``train/answer``, ``train/brevity``, ``train/lr``, ``perf/step_s``, ``perf/tokens_per_s``),
  one step every ``--step-s`` seconds, and a sample table at its end. Half-way it is killed
  and resumed as a run is from its checkpoint: the recorder of the killed process ends it, a
  new recorder continues with the steps the store holds skipped, and the steps between the
  checkpoint and the kill are replayed with new timestamps (the same values): a store or a
  recorder that kept them would hold them twice; then
- a 6-point weight sweep: a parent run and 6 child runs of the same shape, one after another
  (``workbench sweep``'s default), the parent ending with its front metric.
Every run ends FINISHED. Students connect with ``workbench.tracking.connect`` (the client
settings a real run gets). Both servers run ``--workers`` uvicorn workers on this machine.

Then each backend is read back through the MLflow client, against what was sent: ``lost``:
(run, metric, step) points sent but not stored; ``duplicated``: stored rows beyond one per
(run, metric, step), whatever their timestamps (MLflow's own key holds the timestamp, so a
resend with a new one is a second row); ``wrong``: points stored with another value than the
one sent, plus runs whose params differ from their spec's, whose ``spec.yaml`` differs from
the spec, that lack their sample table, or whose last heartbeat is not the last one sent;
``running``: runs not ended; ``failed students``: students that raised or whose process died
before reporting (their runs are missing from the counts, so they count on their own).
Latency: the wall time of each ``log_batch`` call (a failed one included), p50 and p95 over all
calls of all students. The table comes first, then the headline figures as
``BENCH <figure> <value> <unit> target=<target>``; the latency target is the recorder's flush
interval (2 s): a batch slower than that makes a run's logging fall behind.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import platform
import queue
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

# The keys a real step logs (train/* and perf/* of an MO-SFT step).
METRICS = (
    "train/loss",
    "train/answer",
    "train/brevity",
    "train/lr",
    "perf/step_s",
    "perf/tokens_per_s",
)
SWEEP_POINTS = 6
EXPERIMENT = "class-load"
SAMPLES_ARTIFACT = "samples/step_end.json"
FLUSH_INTERVAL_MS = 2000.0  # the recorder's default flush_every_s: the latency target
STARTUP_TIMEOUT_S = 600.0  # a board's first start creates MLflow's tables (~10-50 s on 2 cores)


# ---------------------------------------------------------------------------------------
# one student


def sent_value(seed: int, key_index: int, step: int) -> float:
    """The value a student logs for metric ``key_index`` at ``step`` of the run numbered
    ``seed``: distinct per step, so a point stored under the wrong step shows."""
    return round(seed + key_index * 0.1 + math.sin(step * 0.37 + key_index), 9)


def run_spec(experiment: str, seed: int):
    from workbench.spec.run_spec import RunSpec

    return RunSpec.parse(
        {
            "model": "tiny",
            "data": "order",
            "method": "mo-sft",
            "adapter": "lora",
            "train": {"steps": 200, "seed": seed},
            "tracking": {"experiment": experiment},
        }
    )


class TimedClient:
    """The MLflow client a student's recorder uses: each ``log_batch`` timed, its failures
    kept, and the tags each run was last sent (the heartbeat to compare)."""

    def __init__(self, client):
        self.client = client
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.sent_tags: dict[str, dict[str, str]] = {}

    def __getattr__(self, name):
        return getattr(self.client, name)

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        started = time.perf_counter()
        try:
            result = self.client.log_batch(
                run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous
            )
        except Exception as err:
            self.failures.append(f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")
            raise
        finally:
            self.latencies.append((time.perf_counter() - started) * 1000)
        self.sent_tags.setdefault(run_id, {}).update({t.key: t.value for t in tags})
        return result


def train(recorder, seed: int, steps: range, step_s: float) -> None:
    for step in steps:
        recorder.log_metrics({k: sent_value(seed, i, step) for i, k in enumerate(METRICS)}, step)
        time.sleep(step_s)


def recorded_run(client, spec, seed: int, steps: int, args, parent: str | None = None) -> str:
    """One run recorded start to end; killed half-way and resumed when it is a training run."""
    from workbench import tracking

    run_id = tracking.start_run(client, spec, parent_run_id=parent)
    options = {"heartbeat_every_s": args.heartbeat_s}
    if parent is None:
        killed_at, checkpoint = steps // 2, steps // 4
        recorder = tracking.RunRecorder(client, run_id, **options)
        train(recorder, seed, range(killed_at), args.step_s)
        recorder.finish("KILLED")  # the process is stopped: its recorder ends the run KILLED
        # Resumed from the checkpoint: the steps since then are trained and announced again.
        client.update_run(run_id, status="RUNNING")
        stored = tracking.last_steps(client, run_id)
        recorder = tracking.RunRecorder(client, run_id, skip_through_step=stored, **options)
        first = checkpoint
    else:
        recorder = tracking.RunRecorder(client, run_id, **options)
        first = 0
    with recorder:
        train(recorder, seed, range(first, steps), args.step_s)
        recorder.log_table([{"step": steps, "seed": seed, "completion": "0 1 2"}], SAMPLES_ARTIFACT)
    return run_id


def student(index: int, uri: str, experiment: str, args, start_line, results) -> None:
    """One student's work (in its own process): a run, then a sweep; results onto the queue."""
    from workbench import tracking
    from workbench.spec.mlflow_names import KIND_SWEEP, TAG_KIND

    client = None
    runs: dict[str, int] = {}  # the runs that log a training history -> their seed
    try:
        client = TimedClient(tracking.connect(uri))
        start_line.wait(timeout=STARTUP_TIMEOUT_S)  # every student imported and connected
        seed = 100 * index
        runs[recorded_run(client, run_spec(experiment, seed), seed, args.steps, args)] = seed
        parent = tracking.start_run(
            client, run_spec(experiment, seed + 1), extra_tags={TAG_KIND: KIND_SWEEP}
        )
        for point in range(SWEEP_POINTS):
            seed = 100 * index + 2 + point
            spec = run_spec(experiment, seed)
            runs[recorded_run(client, spec, seed, args.steps, args, parent=parent)] = seed
        with tracking.RunRecorder(client, parent) as recorder:
            recorder.log_metrics({"sweep/hypervolume": 1.0 + index}, step=0)
        error = None
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    results.put(
        {
            "index": index,
            "latencies": client.latencies if client else [],
            "failures": client.failures if client else [],
            "sent_tags": client.sent_tags if client else {},
            "runs": runs,
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


def run_load(uri: str, students: int, args) -> dict:
    from workbench import tracking

    client = tracking.connect(uri)
    experiment = f"{EXPERIMENT}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    tracking.ensure_experiment(client, experiment)
    # Spawned, not forked: a fork would share this process's pooled HTTP connections.
    context = multiprocessing.get_context("spawn")
    start_line, results = context.Barrier(students + 1), context.Queue()
    processes = [
        context.Process(target=student, args=(i, uri, experiment, args, start_line, results))
        for i in range(students)
    ]
    for process in processes:
        process.start()
    spawned = time.monotonic()
    start_line.wait(timeout=STARTUP_TIMEOUT_S)  # they begin together, once all are connected
    started = time.monotonic()
    done, crashed = collect(results, processes)
    wall = time.monotonic() - started
    print(
        f"  {students} students started in {started - spawned:.1f} s, logged in {wall:.1f} s",
        flush=True,
    )
    for process in processes:
        process.join(timeout=60)
    errors = [f"student {d['index']}: {d['error']}" for d in done if d["error"]] + crashed
    sent_tags = {run: tags for d in done for run, tags in d["sent_tags"].items()}
    runs = {run: seed for d in done for run, seed in d["runs"].items()}
    counts = read_back(client, experiment, runs, sent_tags, args.steps)
    return {
        "wall_s": wall,
        "latencies": sorted(x for d in done for x in d["latencies"]),
        "failures": [f for d in done for f in d["failures"]],
        "errors": errors,
        "students_failed": len(errors),
        "runs_expected": students * (2 + SWEEP_POINTS),
        **counts,
        "points_expected": students * (1 + SWEEP_POINTS) * args.steps * len(METRICS),
    }


def collect(results, processes) -> tuple[list[dict], list[str]]:
    """Every student's report; a student whose process ended without one crashed."""
    done: list[dict] = []
    crashed: list[str] = []
    waiting = dict(enumerate(processes))
    while waiting:
        try:
            report = results.get(timeout=1.0)
        except queue.Empty:
            for index, process in list(waiting.items()):
                # Ended, and its report (sent before it ended) is not on the queue: it died.
                if process.exitcode is not None and results.empty():
                    crashed.append(f"student {index}: its process died (exit {process.exitcode})")
                    del waiting[index]
            continue
        waiting.pop(report["index"], None)
        done.append(report)
    return done, crashed


def compare_history(history, expected: dict[int, float]) -> dict[str, int]:
    """One metric's stored points (``Metric``s) against what was sent (step -> value):
    ``lost`` steps, ``duplicated`` rows beyond one per step whatever their timestamps,
    ``wrong`` steps stored with another value."""
    by_step: dict[int, list[float]] = {}
    for point in history:
        by_step.setdefault(point.step, []).append(point.value)
    return {
        "lost": len(expected.keys() - by_step.keys()),
        "duplicated": sum(len(values) - 1 for values in by_step.values()),
        "wrong": sum(
            any(v != expected.get(step) for v in values) for step, values in by_step.items()
        ),
    }


def read_back(client, experiment: str, runs: dict[str, int], sent_tags, steps: int) -> dict:
    """The training runs' stored metrics, params, artifacts and last heartbeat against what
    was sent; the runs not ended."""
    from workbench.spec.mlflow_names import HEARTBEAT_TAG, SPEC_ARTIFACT
    from workbench.widgets.run_compare_logic import download_text

    totals = {"points_stored": 0, "points_lost": 0, "points_duplicated": 0, "points_wrong": 0}
    runs_wrong: list[str] = []
    for run_id, seed in runs.items():
        for i, key in enumerate(METRICS):
            history = client.get_metric_history(run_id, key)
            totals["points_stored"] += len(history)
            found = compare_history(history, {s: sent_value(seed, i, s) for s in range(steps)})
            for what, count in found.items():
                totals[f"points_{what}"] += count
        run = client.get_run(run_id)
        spec = run_spec(experiment, seed)
        artifacts = {a.path for a in client.list_artifacts(run_id, "samples")}
        problems = [
            what
            for what, bad in (
                ("params", run.data.params != spec.flat_params()),
                ("spec.yaml", download_text(client, run_id, SPEC_ARTIFACT) != spec.to_yaml()),
                ("sample table", SAMPLES_ARTIFACT not in artifacts),
                (
                    "heartbeat",
                    run.data.tags.get(HEARTBEAT_TAG)
                    != sent_tags.get(run_id, {}).get(HEARTBEAT_TAG),
                ),
            )
            if bad
        ]
        if problems:
            runs_wrong.append(f"{run_id}: {', '.join(problems)}")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    every = client.search_runs([experiment_id], max_results=50000)
    return {
        **totals,
        "runs_wrong": runs_wrong,
        "runs_stored": len(every),
        "runs_running": sum(r.info.status == "RUNNING" for r in every),
        "heartbeats": sum(HEARTBEAT_TAG in tags for tags in sent_tags.values()),
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
        "--step-s", type=float, help="seconds between a run's steps (default 0.05; quick 0.02)"
    )
    parser.add_argument(
        "--heartbeat-s",
        type=float,
        help="the recorder's heartbeat interval (default 5, the recorder's own; quick 0.2)",
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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one per read-back
    students = args.students or (4 if args.quick else 30)
    args.steps = steps = args.steps or (20 if args.quick else 200)
    if args.step_s is None:
        args.step_s = 0.02 if args.quick else 0.05
    if args.heartbeat_s is None:
        args.heartbeat_s = 0.2 if args.quick else 5.0
    if students < 1:
        parser.error(f"--students {students}: at least 1 student is needed")
    if steps < 4:
        parser.error(f"--steps {steps}: at least 4 (a training run is resumed half-way)")
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
        f"a step every {args.step_s:g} s, heartbeats every {args.heartbeat_s:g} s); "
        f"server workers: {args.workers}"
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
                rows[backend] = run_load(uri, students, args)
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
        "wrong",
        "runs wrong",
        "failed students",
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
                r["points_wrong"],
                len(r["runs_wrong"]),
                r["students_failed"],
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
        for wrong in r["runs_wrong"][:5]:
            print(f"{backend}: a run differs from what was sent: {wrong}")
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
        print(f"BENCH {backend}_points_wrong {r['points_wrong']} points target=0")
        print(f"BENCH {backend}_runs_wrong {len(r['runs_wrong'])} runs target=0")
        print(f"BENCH {backend}_students_failed {r['students_failed']} students target=0")
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
