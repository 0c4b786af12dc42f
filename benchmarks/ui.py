"""How fast the ParetoExplorer is over a large experiment of real runs: its cold first build,
its warm builds, and a preference-weight slider moved in Chromium.

    python benchmarks/ui.py              # 1,000 runs (several minutes to record them)
    python benchmarks/ui.py --quick      # 100 runs, fewer repeats: a CI smoke test
    python benchmarks/ui.py --no-browser # without JupyterLab and Chromium

The runs are written the way a run writes itself. First one real short run trains (the
``tiny-fast`` base, MO-SFT with LoRA on the ``order`` task, correctness, length and training
time as objectives) while an observer keeps every event it announces. Then each of the
``--runs`` runs is started with :func:`workbench.tracking.start_run` from its own spec (the
reference spec with another learning rate, seed, LoRA rank and training weights: every
spec field as a param, the spec as ``spec.yaml``) and those events are replayed, with
varied values, into the MLflow recorder observer over a :class:`RunRecorder`: the same
tags, params, data statistics, costs, per-step ``train/*`` and ``perf/*`` metrics, kernel
counts, evaluations with their sample tables, and the end. The final objectives follow a
trade-off whose front has a concave part, so the explorer has front points no weighted sum
reaches to mark; earlier evaluations lie on the way there from the recorded step 0. Only
the trained model's weights are not stored again (the explorer never reads them).

Then it times, over a sqlite store:

- **cold build**: in a fresh Python process, importing :mod:`workbench.widgets` and the
  first ``ParetoExplorer(experiment)``, as a notebook kernel's first cell pays them (the
  interpreter's own start is not counted); ``--cold`` processes, one after another;
- **warm build**: ``ParetoExplorer(experiment)`` again in this process (reading every run,
  the front, its hypervolume, the weighted-sum reachability, the figure, the sliders);
- **re-rank**: a slider's value set in this process (the ranking, the preferred mark moved,
  the top-5 table rewritten), no browser;
- **slider in Chromium**: the explorer shown in JupyterLab; a click on a slider's track,
  from the pointer going down (the page's own clock) to plotly's update event on the figure
  and the animation frame after it (the frame that shows the moved mark): the round trip
  through the kernel, the re-rank and the redraw, as a user meets it. Each move is one a
  user could make that changes the preferred run (found beforehand in this process), so
  each one redraws the figure.

Each figure is printed as median, min and max over its repeats. Targets (the notebook UI's):
a cold first build at most 5 s and a warm one at most 2 s with 1,000 runs, a slider move
seen in the browser within 250 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

EXPERIMENT = "explorer-benchmark"
# The reference run: a real one, short, on the test base; its events are replayed per run.
REFERENCE_SPEC = {
    "model": "tiny-fast",
    "data": {"source": "order", "train_size": 64, "eval_size": 8},
    "method": "mo-sft",
    "adapter": "lora",
    "train": {"batch_size": 8, "log_every": 1},
    "eval": {"max_new_tokens": 8, "samples_logged": 2},
    "tracking": {"experiment": "reference-run"},
}
# Beside the task's correctness and length, a cost: three objectives, a scatter matrix.
TIME_OBJECTIVE = {"name": "train_time", "direction": "min", "source": "cost:train_time_s"}
LENGTH_RANGE = (2.0, 13.0)  # the length objective's values (its reference point is 14)
TARGETS = {"cold": 5.0, "warm": 2.0, "slider_ms": 250.0}


# ---------------------------------------------------------------------------------------
# the reference run and its replay


def reference_spec(steps: int = 20):
    """The reference run's spec: ``steps`` steps, three evaluations (steps 0, half, end)."""
    from workbench.spec.run_spec import RunSpec

    spec = RunSpec.parse(REFERENCE_SPEC).model_dump(mode="json")
    spec["train"].update(steps=steps, eval_every=max(1, steps // 2))
    spec["objectives"].append(TIME_OBJECTIVE)
    return RunSpec.parse(spec)


def record_reference_run(spec) -> list[tuple[str, tuple]]:
    """Train ``spec`` in a throwaway store; every event the run announced, in order, except
    its start and its saved model."""
    from workbench.running.events import RunObserver
    from workbench.running.pipeline import run

    class EventLog(RunObserver):
        def __init__(self):
            self.events: list[tuple[str, tuple]] = []

    for hook in (h for h in vars(RunObserver) if h.startswith("on_")):
        if hook not in ("on_start", "on_model"):
            setattr(EventLog, hook, lambda self, *args, _h=hook: self.events.append((_h, args)))

    log = EventLog()
    with tempfile.TemporaryDirectory() as tmp:
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        try:
            run(spec, observers=[log], log=lambda *a: None)
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI")
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous
    return log.events


def final_objectives(rng: random.Random) -> dict[str, float]:
    """Correctness (max) and length (min) on a trade-off whose front has a concave part,
    dominated scatter below it, and a training time (min) in seconds."""
    angle = rng.uniform(0.0, math.pi / 2)
    slack = rng.random() ** 3  # most runs near the surface, some well inside it
    correctness = (1.0 - 0.4 * slack) * math.cos(angle) ** 2  # concave: cos^2 + sin^2
    brevity = (1.0 - 0.4 * slack) * math.sin(angle) ** 2
    low, high = LENGTH_RANGE
    return {
        "correctness": correctness,
        "length": high - (high - low) * brevity,
        "train_time": rng.uniform(20.0, 200.0),
    }


def varied_spec(spec, index: int, rng: random.Random):
    from workbench.spec.run_spec import RunSpec

    data = spec.model_dump(mode="json")
    data["optimizer"]["lr"] = rng.choice([1e-4, 3e-4, 1e-3])
    data["train"]["seed"] = index
    data["adapter"]["r"] = rng.choice([4, 8, 16])
    for objective in data["objectives"]:
        if objective.get("term"):
            objective["weight"] = round(rng.random(), 3)
    data["tracking"] = {**data["tracking"], "experiment": EXPERIMENT}
    return RunSpec.parse(data)


def replayed(events, spec, rng: random.Random) -> list[tuple[str, tuple]]:
    """The reference run's events with this run's values: numbers scaled by a factor of the
    run, objectives (and the eval metrics they come from) moving from the recorded step-0
    values to the run's final ones."""
    from workbench.running.events import Evaluation

    scale = rng.uniform(0.8, 1.25)
    final = final_objectives(rng)
    sources = {o.source.split(":", 1)[1]: o.name for o in spec.objectives if o.kind == "metric"}
    evaluations = [args[0] for hook, args in events if hook == "on_evaluation"]
    first = evaluations[0].objectives if evaluations else {}
    last_step = evaluations[-1].step if evaluations else 1

    def objectives_at(step: int) -> dict[str, float]:
        share = step / last_step if last_step else 1.0
        return {
            name: first.get(name, value) + (value - first.get(name, value)) * share
            for name, value in final.items()
        }

    def scaled(values: dict) -> dict:
        return {k: v * scale if isinstance(v, float) else v for k, v in values.items()}

    out = []
    for hook, args in events:
        if hook == "on_evaluation":
            e = args[0]
            objectives = {n: v for n, v in objectives_at(e.step).items() if n in e.objectives}
            metrics = {
                k: objectives[sources[k]] if sources.get(k) in objectives else v * scale
                for k, v in e.metrics.items()
            }
            args = (Evaluation(e.step, objectives, metrics, e.samples),)
        elif hook in ("on_step", "on_costs", "on_kernels"):
            args = (*args[:-1], scaled(args[-1]))
        elif hook == "on_data_statistics":
            args = (scaled(args[0]),)
        out.append((hook, args))
    return out


def make_runs(uri: str, n_runs: int, spec, events, seed: int = 0) -> float:
    """Record ``n_runs`` runs into ``uri`` as a run records itself; returns the seconds."""
    from workbench import tracking
    from workbench.tracking.observer import MlflowRecorderObserver

    rng = random.Random(seed)
    client = tracking.connect(uri)
    started = time.perf_counter()
    for i in range(n_runs):
        run_spec = varied_spec(spec, i, rng)
        run_id = tracking.start_run(client, run_spec)
        recorder = tracking.RunRecorder(client, run_id)
        observer = MlflowRecorderObserver(recorder, run_spec.train.log_every, log=lambda *a: None)
        for hook, args in replayed(events, run_spec, rng):
            getattr(observer, hook)(*args)
    return time.perf_counter() - started


def one_run(uri: str):
    """One recorded run as the store holds it (what each run carries, for the header)."""
    from workbench import tracking

    client = tracking.connect(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return client.search_runs([experiment_id], max_results=1)[0]


# ---------------------------------------------------------------------------------------
# timing the explorer


def cold_build(uri: str) -> dict[str, float]:
    """Run by ``--cold-build URI`` in a fresh process: the import and the first build."""
    started = time.perf_counter()
    from workbench.widgets import ParetoExplorer

    imported = time.perf_counter()
    explorer = ParetoExplorer(EXPERIMENT, uri=uri)
    built = time.perf_counter()
    return {
        "import_s": imported - started,
        "build_s": built - imported,
        "total_s": built - started,
        "runs": len(explorer.runs),
    }


def time_cold_builds(uri: str, count: int) -> list[dict[str, float]]:
    out = []
    for _ in range(count):
        child = subprocess.run(
            [sys.executable, __file__, "--cold-build", uri],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        )
        if child.returncode:
            raise SystemExit(f"the cold build failed:\n{child.stderr[-3000:]}")
        out.append(json.loads(child.stdout.strip().splitlines()[-1]))
    return out


def time_warm_builds(uri: str, repeats: int) -> tuple[list[float], object]:
    from workbench.widgets import ParetoExplorer

    ParetoExplorer(EXPERIMENT, uri=uri)  # the first build in this process: not a warm one
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


def moves_that_redraw(explorer, count: int) -> list[tuple[int, float]]:
    """(slider index, value) pairs, each changing the preferred run of a freshly built
    explorer when applied in order: plotly sends nothing for a mark that did not move."""
    steps = [round(0.05 * k, 2) for k in range(21)]
    moves: list[tuple[int, float]] = []
    best = int(explorer.ranking()[0])
    rng = random.Random(2)
    for _ in range(50 * count):
        if len(moves) == count:
            break
        index = rng.randrange(len(explorer.sliders))
        value = rng.choice(steps)
        slider = explorer.sliders[index]
        if value == slider.value:
            continue
        before = slider.value
        slider.value = value
        now = int(explorer.ranking()[0])
        if now == best:
            slider.value = before
            continue
        best = now
        moves.append((index, value))
    return moves


# Set up in the page: the pointer's time on a slider, the time of the frame after the
# figure's next draw. Plotly announces a redraw by several events (an update, a restyle, a
# react, and afterplot after any of them); the listeners go on every plot element the page
# holds at each move (FIGURE_LISTENERS), since a widget may render its figure into a new one.
WATCH_POINTER = """() => {
    window.__move = {input: null, drawn: null};
    document.addEventListener('pointerdown', () => {
        window.__move = {input: performance.now(), drawn: null};
    }, true);
}"""
FIGURE_LISTENERS = """() => {
    const drawn = () => requestAnimationFrame(() => {
        if (window.__move.input !== null && window.__move.drawn === null) {
            window.__move.drawn = performance.now();
        }
    });
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
        if (plot.__watched || !plot.on) continue;
        plot.__watched = true;
        for (const event of ['plotly_update', 'plotly_restyle', 'plotly_react',
                             'plotly_afterplot']) plot.on(event, drawn);
    }
}"""


def time_slider_in_browser(
    uri: str, moves: list[tuple[int, float]], folder: Path, runs: int
) -> list[float]:
    """The explorer in JupyterLab in Chromium: ms from each move's click on a slider's track
    to the frame after the figure's update."""
    import nbformat
    from lab_browser import chromium, isolated_env, lab_server, run_all, wait_for

    notebooks = folder / "notebooks"
    notebooks.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from workbench.widgets import ParetoExplorer\n"
            f"explorer = ParetoExplorer({EXPERIMENT!r}, uri={uri!r})\n"
            "print('runs shown:', len(explorer.runs))\n"
            "explorer"
        )
    ]
    nbformat.write(nb, notebooks / "explorer.ipynb")
    # One thread for the kernel: the benchmark's own process and the browser share the cores.
    env = isolated_env(folder, {"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri})
    times = []
    with (
        lab_server(notebooks, env, folder / "lab.out") as (base, token),
        chromium(folder / "chromium-home") as browser,
    ):
        page = browser.new_context(viewport={"width": 1280, "height": 1200}).new_page()
        page.set_default_timeout(120_000)
        # The build over 1,000 runs in a kernel on 2 busy cores: well under this.
        run_all(page, base, token, "explorer.ipynb", f"runs shown: {runs}", 600)
        page.locator(".js-plotly-plot").first.wait_for()
        page.evaluate(WATCH_POINTER)
        sliders = page.locator(".widget-slider")
        for index, value in moves:
            page.evaluate(FIGURE_LISTENERS)
            slider = sliders.nth(index)
            slider.scroll_into_view_if_needed()
            track = slider.locator(".noUi-base").bounding_box()
            page.mouse.click(track["x"] + track["width"] * value, track["y"] + track["height"] / 2)
            move = wait_for(
                lambda: page.evaluate("window.__move.drawn !== null && window.__move"),
                120,
                "the figure redrew after a slider move",
                poll_s=0.02,
            )
            shown = slider.locator(".widget-readout").inner_text().strip()
            if abs(float(shown) - value) > 1e-9:
                raise RuntimeError(f"the slider shows {shown} after a click at {value:.2f}")
            times.append(move["drawn"] - move["input"])
    return times


# ---------------------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    return (
        f"{statistics.median(values):>10.{digits}f}{min(values):>10.{digits}f}"
        f"{max(values):>10.{digits}f}{len(values):>5}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 runs, fewer repeats (CI)")
    parser.add_argument("--runs", type=int, default=None, help="runs recorded (default 1000)")
    parser.add_argument("--cold", type=int, default=None, help="cold builds timed (default 5)")
    parser.add_argument("--repeats", type=int, default=None, help="warm builds timed (default 5)")
    parser.add_argument("--moves", type=int, default=None, help="re-ranks timed (default 40)")
    parser.add_argument(
        "--browser-moves", type=int, default=None, help="slider moves in Chromium (default 15)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="leave out the slider timed in Chromium"
    )
    parser.add_argument("--cold-build", metavar="URI", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_build:
        print(json.dumps(cold_build(args.cold_build)))
        return 0
    n_runs = args.runs or (100 if args.quick else 1000)
    cold_count = args.cold or (1 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)
    moves = args.moves or (10 if args.quick else 40)
    browser_moves = args.browser_moves or (3 if args.quick else 15)
    for name in ("runs", "cold", "repeats", "moves", "browser_moves"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} {value}: must be at least 1")

    if not args.no_browser:
        from lab_browser import BrowserMissing, check_browser

        try:
            check_browser()
        except BrowserMissing as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    import ipywidgets
    import mlflow
    import plotly

    spec = reference_spec(6 if args.quick else 20)
    started = time.perf_counter()
    events = record_reference_run(spec)
    reference_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        # The store rule puts MLFLOW_TRACKING_URI first: point it at the benchmark's store.
        os.environ["MLFLOW_TRACKING_URI"] = uri
        make_s = make_runs(uri, n_runs, spec, events)
        stored = one_run(uri)
        cold = time_cold_builds(uri, cold_count)
        loads, explorer = time_warm_builds(uri, repeats)
        # Planned on a fresh build: its sliders start where the browser's do.
        planned = moves_that_redraw(type(explorer)(EXPERIMENT, uri=uri), browser_moves)
        reranks = time_reranks(explorer, moves)
        front_size = int(explorer.front.mask.sum())
        unreachable = int(explorer.unreachable.sum())
        shown = len(explorer.runs)
        clicks = (
            []
            if args.no_browser
            else time_slider_in_browser(uri, planned, Path(tmp) / "lab", n_runs)
        )

    if shown != n_runs or any(c["runs"] != n_runs for c in cold):
        print(f"error: the explorer shows {shown} runs, the store holds {n_runs}", file=sys.stderr)
        return 1
    print(
        f"ParetoExplorer over {n_runs} recorded runs ({len(spec.objectives)} objectives) "
        "in a sqlite store"
    )
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"plotly {plotly.__version__}, ipywidgets {ipywidgets.__version__}, "
        f"{os.cpu_count()} CPU cores; load average {load_average()}"
    )
    print(
        f"reference run trained in {reference_s:.1f} s ({len(events)} events); each run holds "
        f"{len(stored.data.params)} params, {len(stored.data.metrics)} metric keys, "
        f"{len(stored.data.tags)} tags; {n_runs} runs recorded in {make_s:.1f} s"
    )
    print(f"front: {front_size} runs, {unreachable} no weighted sum reaches")
    print()
    print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}{'n':>5}")
    print(f"{'cold: import workbench.widgets s':<34}{spread([c['import_s'] for c in cold])}")
    print(f"{'cold: first build s':<34}{spread([c['build_s'] for c in cold])}")
    print(f"{'cold: import + first build s':<34}{spread([c['total_s'] for c in cold])}")
    print(f"{'warm build s':<34}{spread(loads)}")
    print(f"{'re-rank in process ms':<34}{spread(reranks, 1000, 2)}")
    if clicks:
        print(f"{'slider move in Chromium ms':<34}{spread(clicks, 1, 1)}")
    print()
    cold_s = statistics.median(c["total_s"] for c in cold)
    print(f"BENCH explorer_cold_build_{n_runs}_runs_s {cold_s:.3f} s target=<={TARGETS['cold']:g}")
    print(
        f"BENCH explorer_warm_build_{n_runs}_runs_s {statistics.median(loads):.3f} s "
        f"target=<={TARGETS['warm']:g}"
    )
    rerank_ms = 1000 * statistics.median(reranks)
    print(f"BENCH explorer_rerank_ms {rerank_ms:.2f} ms target=<=50")
    if clicks:
        print(
            f"BENCH explorer_slider_in_browser_ms {statistics.median(clicks):.1f} ms "
            f"target=<={TARGETS['slider_ms']:g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
