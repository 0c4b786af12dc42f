"""The `workbench` command line: demo, sweep, search, run, launch, resume, status, stop, front, ui, board, archive, replay, export, merge."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

DEMO_HELP = """Build (or load) the tiny base, run a weight sweep of multi-objective SFT on the
'order' task (correctness against brevity) in this process, print the Pareto front with its
hypervolume against the task's reference point, and write the front as an HTML plot."""


def _quiet_libraries() -> None:
    # Library chatter (Lightning tips, HF progress bars) hides the workbench's own output.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # "Downloading artifacts"
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' levels on import; ours must come after)

    from workbench.library_output import quiet_loggers

    quiet_loggers()
    # Libraries' deprecation chatter is hidden; our own RuntimeWarnings (e.g. where unsent
    # metrics were saved) must stay visible.
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def _format_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns),
             "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def cmd_demo(args) -> int:
    from workbench import paths
    from workbench.spec import RunSpec
    from workbench.sweep import run_sweep, weight_grid

    spec = RunSpec.parse({
        "data": {"source": "order"},
        "train": {"steps": args.steps, "eval_every": max(1, args.steps // 3)},
        "tracking": {"experiment": args.experiment},
    })
    weights = weight_grid(args.points)
    figure = Path(args.html) if args.html else paths.default_store_dir() / f"{args.experiment}-front.html"
    print(f"Weight sweep on 'order': {len(weights)} runs, correctness weights {weights}")
    result = run_sweep(spec, weights, progress=_show_progress(args), figure_path=figure)
    _print_sweep(result, args.experiment)
    print("\nNext: `workbench ui` serves the MLflow UI on http://127.0.0.1:5000 to compare the runs;\n"
          "for notebooks, `pip install -e '.[ui]'` then `jupyter lab` (token-protected, on localhost).")
    return 0


def _print_sweep(result, experiment: str) -> None:
    """The sweep's runs with their objectives (front marked), the base model and hypervolumes."""
    from workbench import paths

    names = result.front.names
    rows = []
    for label, point, on_front in zip(result.front.labels, result.front.points, result.front.mask):
        row = {"run": label, **{n: float(v) for n, v in zip(names, point)}}
        row["front"] = "*" if on_front else ""
        rows.append(row)
    print()
    print(_format_table(rows, ["run", *names, "front"]))
    ref = ", ".join(f"{n}={v:g}" for n, v in zip(names, result.front.reference))
    print("\nbase model: " + ", ".join(f"{n}={result.base_objectives[n]:.4g}" for n in names
                                        if n in result.base_objectives))
    print(f"hypervolume (reference {ref}): sweep {result.front.hypervolume:.4g}, "
          f"base model {result.base_hypervolume:.4g}")
    print(f"front plot: {result.figure_path}")
    print(f"runs: experiment '{experiment}' in {paths.tracking_uri()} (parent run {result.parent_run_id})")


SWEEP_HELP = """Train one run per point on the simplex of training weights of the spec's weighted
objectives (those with a loss term; two or more), as children of one parent MLflow run that
records their Pareto front, its hypervolume (sweep/hypervolume, sweep/base_hypervolume,
sweep/front_size), front.json and the plot. --parallel 1 trains the runs one after another in
this process; --parallel K launches them as background processes, K at a time. Ctrl-C stops
the running children; every run ends KILLED, none is left RUNNING."""


def cmd_sweep(args) -> int:
    spec = _checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    from workbench import paths
    from workbench.sweep import run_sweep

    experiment = spec.tracking.experiment
    figure = Path(args.html) if args.html else paths.default_store_dir() / f"{experiment}-sweep-front.html"
    result = run_sweep(spec, points=args.points, design=args.design, seed=args.seed,
                       parallel=args.parallel, progress=_show_progress(args) and args.parallel == 1,
                       figure_path=figure)
    _print_sweep(result, experiment)
    return 0


SEARCH_HELP = """Search spec fields (training weights, adapter settings such as adapter.r,
optimizer.lr, any dotted field) with Optuna's multi-objective samplers (NSGA-II, or the GP
sampler), the spec's objectives as the study's. The spec file holds a `search:` section with
the space (field: {low, high[, log, step]} or {choices: [...]}). Each trial trains as a
child of one parent MLflow run that records the front of the completed trials
(study/hypervolume, study/base_hypervolume, study/front_size, front.json, the plot).
--workers K starts K processes sharing the study through its Optuna database (--storage, a
SQLAlchemy URL; default optuna.db next to a local MLflow store). Poor trials are pruned at
an evaluation (their runs end KILLED, the trials PRUNED). Ctrl-C stops the workers; no run
or trial is left RUNNING."""


def cmd_search(args) -> int:
    from workbench import preflight
    from workbench.search import check_counts, check_storage, load_config

    # The config is checked before torch, transformers, lightning or mlflow is imported.
    check_counts(args.trials, args.workers)
    spec, settings = load_config(args.spec, **{"train.steps": args.steps, "search.sampler": args.sampler,
                                               "search.storage": args.storage, "search.study": args.study})
    if settings.storage is not None:
        check_storage(settings.storage)
    preflight.check(spec)
    _quiet_libraries()
    from workbench import paths
    from workbench.search import run_search

    experiment = spec.tracking.experiment
    figure = Path(args.html) if args.html else paths.default_store_dir() / f"{experiment}-search-front.html"
    result = run_search(spec, settings, trials=args.trials, workers=args.workers,
                        progress=_show_progress(args) and args.workers == 1, figure_path=figure)
    names = list(result.front.names)
    on_front = dict(zip(result.front.labels, result.front.mask))
    rows = [{"trial": o.number, "state": o.state,
             **o.params, **o.values,
             "front": "*" if on_front.get(f"trial {o.number}", False) else ""}
            for o in result.trials]
    params = list(dict.fromkeys(k for o in result.trials for k in o.params))
    print()
    print(_format_table(rows, ["trial", "state", *params, *names, "front"]))
    ref = ", ".join(f"{n}={v:g}" for n, v in zip(names, result.front.reference)) \
        if result.front.reference is not None else "none"
    print(f"\nhypervolume (reference {ref}): study {result.front.hypervolume:.4g}, "
          f"base model {result.base_hypervolume:.4g}")
    print(f"front plot: {result.figure_path}")
    print(f"runs: experiment '{experiment}' in {paths.tracking_uri()} (parent run {result.parent_run_id}); "
          f"Optuna study '{result.study_name}' in {result.storage}")
    return 0


def _show_progress(args) -> bool:
    """Progress bars on a terminal only: redirected to a file or a CI log, a bar's redraws
    would bury the output (the runs' own lines still print)."""
    return not args.no_progress and sys.stdout.isatty()


def _checked_spec(path: str, **changes):
    """The spec at ``path``, validated and checked against this machine (its data file and
    model folder exist) before torch, transformers, lightning or mlflow is imported, so a
    wrong spec is answered at once. Library output is quieted afterwards."""
    from workbench import preflight
    from workbench.spec import RunSpec

    spec = RunSpec.from_file(path)
    if changes:
        spec = spec.updated(**changes)
    preflight.check(spec)
    _quiet_libraries()
    return spec


def _printed_node_commands(spec, workbench_args: list[str]) -> bool:
    """A multi-node spec started by hand: print the command for each node instead (True)."""
    from workbench import cluster

    if not cluster.needs_external_launch(spec.train):
        return False
    print(cluster.torchrun_commands(spec.train, workbench_args))
    return True


def cmd_run(args) -> int:
    spec = _checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    if _printed_node_commands(spec, ["run", args.spec, *(["--steps", str(args.steps)] if args.steps else [])]):
        return 0
    from workbench.runner import run

    result = run(spec, progress=_show_progress(args))
    if result.run_id is not None:
        _print_run_end(result, spec)
    return 0


def _print_run_end(result, spec) -> None:
    """Where the run is stored, its objectives against the base model's (its step-0
    evaluation), and what to do next."""
    from workbench import paths

    experiment = spec.tracking.experiment
    print(f"\nrun {result.run_id} {result.status}: experiment '{experiment}' in {paths.tracking_uri(spec.tracking.uri)}")
    base = result.trajectory[0][1] if result.trajectory and result.trajectory[0][0] == 0 else {}
    rows = [{"objective": f"{name} ({spec.objective(name).direction})",
             "base model": base.get(name, ""), "this run": value}
            for name, value in result.objectives.items()]
    if rows:
        print(_format_table(rows, ["objective", "base model", "this run"]))
    print("\nNext:\n"
          f"  workbench front --experiment {experiment}   # the Pareto front of the experiment's runs\n"
          f"  workbench runs --experiment {experiment}    # its runs, their status and objectives\n"
          "  workbench ui                               # compare runs in the MLflow UI\n"
          f"  workbench export {result.run_id} DIR   # the trained model as a folder")


def cmd_launch(args) -> int:
    spec = _checked_spec(args.spec)
    if _printed_node_commands(spec, ["run", args.spec]):
        return 0
    from workbench.launcher import launch

    handle = launch(spec)
    print(f"launched run {handle.run_id} (pid {handle.pid}); log: {handle.log_path}")
    print(f"`workbench status {handle.run_id}` / `workbench stop {handle.run_id}`")
    return 0


def cmd_resume(args) -> int:
    from workbench.runner import resume, resume_spec

    if _printed_node_commands(resume_spec(args.run_id), ["resume", args.run_id]):
        return 0
    result = resume(args.run_id, progress=_show_progress(args))
    print(f"run {result.run_id} {result.status}")
    for name, value in result.objectives.items():
        print(f"  objective/{name} = {value:.4g}")
    return 0


def cmd_status(args) -> int:
    from workbench import liveness, run_listing, tracking

    client = tracking.connect()
    run = run_listing.get_row(client, args.run_id)
    if run.status == "RUNNING":
        liveness.reap_dead_runs(client, [client.get_run(args.run_id).info.experiment_id])
    p = run_listing.run_progress(client, args.run_id)
    row = p.row
    print(f"run {row.run_id} ({row.name}, experiment '{row.experiment}'): {row.status}")
    if row.kind == "run":
        loss = f"{p.last_loss:.4g}" if p.last_loss is not None else "-"
        step_s = f"{p.step_s:.3g} s/step" if p.step_s is not None else "- s/step"
        eta = f", ETA {run_listing.format_duration(p.eta_s)}" if row.status == "RUNNING" else ""
        print(f"step {row.step_of_total}, last loss {loss}, {step_s}, "
              f"elapsed {run_listing.format_duration(p.elapsed_s)}{eta}")
    if row.objectives:
        print("objectives: " + ", ".join(f"{k}={v:.4g}" for k, v in row.objectives.items()))
    if p.error:
        print(f"error: {p.error}")
    return 0


def cmd_runs(args) -> int:
    from workbench import liveness, run_listing, tracking

    client = tracking.connect()
    for run_id in liveness.reap_dead_runs(client):
        print(f"note: run {run_id} had died without ending; it is now FAILED")
    rows = run_listing.list_runs(client, args.experiment)
    if not rows:
        print(f"no runs yet in {client.tracking_uri}")
        return 0
    names = {r.run_id: r.name for r in rows}
    table = []
    for r in rows:
        table.append({
            "run_id": r.run_id, "name": r.name or "-", "status": r.status,
            "step": r.step_of_total or "-",
            "objectives": ", ".join(f"{k}={v:.4g}" for k, v in r.objectives.items()) or "-",
            "parent": f"{names.get(r.parent, '')} {r.parent[:8]}".strip() if r.parent else "-",
            "experiment": r.experiment,
        })
    columns = ["run_id", "name", "status", "step", "objectives", "parent"]
    print(_format_table(table, columns if args.experiment else [*columns, "experiment"]))
    return 0


def cmd_stop(args) -> int:
    from workbench.launcher import attach

    print(attach(args.run_id).stop())
    return 0


def cmd_front(args) -> int:
    from workbench import paths, plots, tracking
    from workbench.fronts import front_from_runs
    from workbench.liveness import reap_dead_runs

    client = tracking.connect()
    for run_id in reap_dead_runs(client):
        print(f"note: run {run_id} had died without ending; it is now FAILED")
    from workbench import run_listing

    if client.get_experiment_by_name(args.experiment) is None:
        raise run_listing.unknown_experiment(client, args.experiment)
    every = tracking.runs_frame(client, args.experiment, status=None)
    parents = {r["run_id"]: r["run_name"] for r in every
               if r["tags"].get("workbench.kind") in ("sweep", "study")}
    runs = [r for r in every if r["status"] == "FINISHED" and r["run_id"] not in parents]
    if not runs:
        raise WorkbenchError(f"experiment '{args.experiment}' has no finished runs in {paths.tracking_uri()}")
    front = front_from_runs(runs, args.objective or None)
    rows = run_listing.front_rows(front, runs, parents)
    print(_format_table(rows, ["sweep", "label", *front.names, "run_id"] if parents
                        else ["label", *front.names, "run_id"]))
    if front.reference is not None:
        print(f"hypervolume: {front.hypervolume:.4g} (reference {list(map(float, front.reference))})")
    out = Path(args.html) if args.html else paths.default_store_dir() / f"{args.experiment}-front.html"
    plots.write_html(plots.front_figure(front), out)
    print(f"front plot: {out}")
    return 0


def cmd_ui(args) -> int:
    from workbench import paths
    from workbench.servers import mlflow_server, serve_in_foreground

    uri = paths.tracking_uri()
    root = paths.artifact_root(uri)
    server = mlflow_server("MLflow UI", uri, host=args.host, port=args.port,
                           options=["--default-artifact-root", root] if root else [])
    server.check_port()
    print(f"starting the MLflow UI for {uri} ...", flush=True)

    def ready(server):
        chosen = f" (--port 0: free port {server.port})" if args.port == 0 else ""
        print(f"MLflow UI on {server.url}{chosen}; Ctrl-C stops it (server log: {server.log_path})", flush=True)

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("MLflow UI stopped", flush=True)
    return code


def cmd_lab(args) -> int:
    import secrets

    from workbench import paths
    from workbench.servers import ManagedServer, serve_in_foreground

    root = Path(args.dir) if args.dir else (paths.checkout_root() or Path.cwd()) / "notebooks"
    if not root.is_dir():
        print(f"error: no folder {root}; pass the notebooks' folder with --dir", file=sys.stderr)
        return 2
    token = secrets.token_hex(24)  # a fresh token each start; only the printed URL carries it
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip={host}",
               "--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
               "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # JupyterLab refuses root otherwise (containers)
    server = ManagedServer("JupyterLab", command, host=args.host, port=args.port, health_path="/api")
    server.check_port()
    print(f"starting JupyterLab on {root} ...", flush=True)

    def ready(server):
        print(f"JupyterLab on {server.url}/lab?token={token}\nCtrl-C stops it (server log: "
              f"{server.log_path})", flush=True)

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("JupyterLab stopped", flush=True)
    return code


BOARD_HELP = """One MLflow tracking server on PostgreSQL for a lab or a class: a private
PostgreSQL server the board runs in a data folder (--data DIR: created on first use), or an
existing one (--database-url-file FILE or the environment variable WORKBENCH_DATABASE_URL).
Artifacts are kept in a folder and served through the tracking server. It prints the
MLFLOW_TRACKING_URI students set and the Optuna storage URL for `workbench search --storage`
(a second database on the same server); passwords are never printed. Ctrl-C or SIGTERM stops
every server it started. See docs/board.md."""


def cmd_board(args) -> int:
    from workbench.board.serve import run_board

    return run_board(args)


def cmd_archive(args) -> int:
    from workbench.replay import archive_experiment

    summary = archive_experiment(args.experiment, args.file, max_artifact_mb=args.max_artifact_mb)
    print(f"archived {summary.runs} runs of '{args.experiment}' ({summary.metric_points} metric points, "
          f"{summary.artifacts} artifacts) to {summary.path}")
    for what, items in (("unfinished runs left out", summary.skipped_runs),
                        (f"artifacts over {args.max_artifact_mb:g} MB left out", summary.skipped_artifacts)):
        if items:
            print(f"{what}: {', '.join(items)}")
    print(f"replay it elsewhere with: workbench replay {summary.path.name}")
    return 0


def cmd_replay(args) -> int:
    from workbench.replay import replay_archive

    summary = replay_archive(args.file, experiment=args.experiment)
    print(f"replayed {len(summary.run_ids)} runs into experiment '{summary.experiment}'; open them with "
          f"ParetoExplorer('{summary.experiment}') in a notebook, `workbench front --experiment "
          f"{summary.experiment}` or `workbench ui`")
    return 0


def cmd_export(args) -> int:
    from workbench.export import export_run

    folder = export_run(args.run_id, args.dir)
    print(f"exported run {args.run_id} to {folder} (load with AutoModelForCausalLM.from_pretrained)")
    return 0


MERGE_HELP = """Merge finished runs' models (full weights, or LoRA adapters as their deltas over
the base) in weight space, evaluate the merged model on the runs' objectives and record it as
a run (tag workbench.merge), so `workbench front` shows it beside the trained runs. Methods:
linear (a soup), task_arithmetic, magnitude_prune, ties, dare_linear, dare_ties, breadcrumbs,
breadcrumbs_ties, lines, adamerging. --grid C ... interpolates between two runs: one merged
run per coefficient c (weights 1-c, c) under one parent run that records their front."""


def cmd_merge(args) -> int:
    from workbench.errors import SpecError
    from workbench.merging.catalog import METHODS as MERGE_METHODS
    from workbench.merging.catalog import check_settings

    # Settings are checked before torch is imported, so a mistake is answered at once.
    lines_alpha, lines_beta = args.lines if args.lines else (None, None)
    options = {"density": args.density, "majority_sign_method": args.majority_sign, "gamma": args.gamma,
               "lines_alpha": lines_alpha, "lines_beta": lines_beta, "seed": args.seed}
    if args.grid is not None:
        if len(args.run_ids) != 2 or args.weights:
            raise SpecError("--grid interpolates between exactly two runs (weights 1-c, c); "
                            "give two run ids and no --weights")
        if args.method in MERGE_METHODS and MERGE_METHODS[args.method].learned:
            raise SpecError(f"--method {args.method} learns its coefficients; --grid takes a method with given weights")
        for c in args.grid:
            check_settings(args.method, 2, (1 - c, c), **options)
    else:
        check_settings(args.method, len(args.run_ids), args.weights, **options)
    _quiet_libraries()
    from workbench.merges import merge_grid, merge_runs

    if args.grid is not None:
        result = merge_grid(*args.run_ids, args.grid, args.method, run_name=args.name, **options)
        rows = [{"coefficient": r.coefficient, **r.objectives,
                 "front": "*" if on else "", "run_id": r.run_id}
                for r, on in zip(result.runs, _front_marks(result.front, result.runs))]
        print(_format_table(rows, ["coefficient", *result.front.names, "front", "run_id"]))
        print(f"hypervolume: {result.front.hypervolume:.4g}; parent run {result.parent_run_id}")
        return 0
    result = merge_runs(args.run_ids, args.method, args.weights, run_name=args.name,
                        adamerging_steps=args.steps, **options)
    print(f"merged run {result.run_id} ({args.method} of {', '.join(args.run_ids)})")
    for name, value in result.objectives.items():
        print(f"  objective/{name} = {value:.4g}")
    for name, value in result.learned.items():
        print(f"  {name} = {value:.4g}")
    return 0


def _front_marks(front, runs) -> list[bool]:
    """Whether each merged run is on the front (front labels follow the children's order)."""
    on = dict(zip(front.labels, front.mask))
    return [bool(on.get(f"{r.settings.method} c={r.coefficient:g}", False)) for r in runs]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Run, compare and teach fine-tuning methods; every run tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the main job: a tracked weight sweep ending in a Pareto front",
                       description=DEMO_HELP)
    p.add_argument("--points", type=int, default=5, help="sweep points (default 5)")
    p.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    p.add_argument("--experiment", default="demo", help="MLflow experiment name (default demo)")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sweep", help="a weight sweep over 2+ objectives ending in a Pareto front",
                       description=SWEEP_HELP)
    p.add_argument("spec", help="path of a YAML run spec with two or more weighted objectives")
    p.add_argument("--points", type=int, required=True,
                   help="weight points (a grid over 3 objectives has 3, 6, 10, 15, ... points)")
    p.add_argument("--parallel", type=int, default=1,
                   help="runs at once (default 1: one after another in this process; K > 1: "
                        "background processes)")
    p.add_argument("--design", choices=("grid", "random"), default="grid",
                   help="grid: evenly spread over the weight simplex; random: uniform draws")
    p.add_argument("--seed", type=int, default=0, help="seed of the random design (default 0)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("search", help="a multi-objective Optuna search over spec fields, ending in a Pareto front",
                       description=SEARCH_HELP)
    p.add_argument("spec", help="path of a YAML run spec with a search: section (the space)")
    p.add_argument("--trials", type=int, required=True, help="trials to run (shared by the workers)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the study (default 1: trials in this process)")
    p.add_argument("--sampler", choices=("nsga2", "gp"), help="override search.sampler (default nsga2)")
    p.add_argument("--storage", help="override search.storage: SQLAlchemy URL of the Optuna database")
    p.add_argument("--study", help="override search.study: the Optuna study name (an existing one continues)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they show only on a terminal)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("run", help="train one run spec (YAML) in this process",
                       description="Train the run described by a YAML RunSpec in this process, tracked in MLflow.")
    p.add_argument("spec", help="path of a YAML run spec")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("launch", help="train a run spec in a background process",
                       description="Start a run in its own process session; prints its run id.")
    p.add_argument("spec", help="path of a YAML run spec")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("resume", help="continue a failed or killed run from its last checkpoint",
                       description="Continue a FAILED/KILLED run from its last checkpoint, in the same MLflow run.")
    p.add_argument("run_id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="status, step of total, last loss and ETA of a run",
                       description="Where a run stands: its status, step of total, last loss, "
                                   "time per step and (while it runs) the time left.")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("runs", help="list runs: id, name, status, step of total, objectives, parent",
                       description="List the store's runs (oldest first) with their status, step "
                                   "of total, objectives and parent sweep.")
    p.add_argument("--experiment", help="only this MLflow experiment (default: all)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("stop", help="stop a launched run (it ends KILLED)")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("front", help="print and plot the Pareto front of an experiment's runs",
                       description="Read an experiment's finished runs back from MLflow and compute their Pareto front.")
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--objective", action="append", help="objective name (repeat; default: all shared)")
    p.add_argument("--html", help="where to write the front plot")
    p.set_defaults(func=cmd_front)

    p = sub.add_parser("ui", help="serve the MLflow UI for the store on 127.0.0.1",
                       description="Start the MLflow server/UI over the workbench's store (bound to 127.0.0.1 unless --host says otherwise).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000,
                   help="port to serve on (default 5000; 0: any free port, printed when ready)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("lab", help="serve JupyterLab on the teaching notebooks on 127.0.0.1, with a token",
                       description="Start JupyterLab on the notebooks folder (bound to 127.0.0.1 unless --host says otherwise; token required, printed in the URL).")
    p.add_argument("--dir", help="folder to serve (default: notebooks/ of this checkout)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8888,
                   help="port to serve on (default 8888; 0: any free port, printed when ready)")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("board", help="a class's or lab's MLflow server on PostgreSQL, with the Optuna storage",
                       description=BOARD_HELP)
    p.add_argument("--data", metavar="DIR",
                   help="run a private PostgreSQL server with its data in DIR (initdb on first use)")
    p.add_argument("--database-url", metavar="URL",
                   help="an existing PostgreSQL database, postgresql://USER@HOST[:PORT]/DB (a password "
                        "here is visible to other users: prefer the file or WORKBENCH_DATABASE_URL)")
    p.add_argument("--database-url-file", metavar="FILE", help="a file whose first line is the database URL")
    p.add_argument("--artifacts", metavar="DIR", help="the artifacts folder (default with --data: DIR/artifacts)")
    p.add_argument("--serve-artifacts", action=argparse.BooleanOptionalAction, default=True,
                   help="serve artifacts through the tracking server (default; with --no-serve-artifacts "
                        "clients write to the folder themselves)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface the tracking server binds (default 127.0.0.1; 0.0.0.0 for a class's network)")
    p.add_argument("--port", type=int, default=5000, help="tracking server port (default 5000; 0: any free port)")
    p.add_argument("--db-host", default="127.0.0.1", help="with --data: interface PostgreSQL binds (default 127.0.0.1)")
    p.add_argument("--db-port", type=int, default=0, help="with --data: PostgreSQL's port (default 0: any free port)")
    p.add_argument("--workers", type=int, default=2, help="tracking server worker processes (default 2)")
    p.add_argument("--run-as", default="postgres",
                   help="run as root: the unprivileged user PostgreSQL runs as (default postgres)")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("archive", help="write an experiment's finished runs into one file (for replay elsewhere)",
                       description="Archive the finished runs of an experiment (params, tags, every metric point, "
                                   "small artifacts) into one zip file that `workbench replay` loads into another store.")
    p.add_argument("experiment")
    p.add_argument("file", help="the zip file to write")
    p.add_argument("--max-artifact-mb", type=float, default=5.0,
                   help="leave out artifacts larger than this (model weights; default 5)")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("replay", help="load an archived experiment into this store, to explore recorded runs",
                       description="Recreate the runs of a `workbench archive` file in the current MLflow store.")
    p.add_argument("file")
    p.add_argument("--experiment", help="experiment name to replay under (default: the archived name)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export", help="write a run's merged weights + tokenizer as a model folder",
                       description="Export a finished run as safetensors weights (adapters merged) plus tokenizer, loadable with from_pretrained.")
    p.add_argument("run_id")
    p.add_argument("dir")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("merge", help="merge runs' models in weight space and record the merged model as a run",
                       description=MERGE_HELP)
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="finished runs of one base model")
    p.add_argument("--method", default="task_arithmetic",
                   help="merge method (default task_arithmetic; see docs/concepts.md)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default 1 each)")
    p.add_argument("--density", type=float,
                   help="fraction of each task vector kept (ties, dare_*, magnitude_prune, breadcrumbs*)")
    p.add_argument("--majority-sign", choices=("total", "frequency"), default="total",
                   help="how ties/dare_ties elect the sign (default total)")
    p.add_argument("--gamma", type=float, default=0.01, help="breadcrumbs: largest fraction dropped (default 0.01)")
    p.add_argument("--lines", type=float, nargs=2, metavar=("ALPHA", "BETA"),
                   help="LiNeS scaling alpha + beta l/(L-1) of block l (default for --method lines: 0.5 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of DARE's random masks (default 0)")
    p.add_argument("--steps", type=int, default=20, help="adamerging: optimisation steps (default 20)")
    p.add_argument("--grid", type=float, nargs="+", metavar="C",
                   help="coefficients to interpolate two runs at (one merged run each, under a parent)")
    p.add_argument("--name", help="run name of the merged run (or of the grid's parent)")
    p.set_defaults(func=cmd_merge)
    return parser


# Commands that validate a spec before the heavy imports (they quiet the libraries after).
_SPEC_FIRST = (cmd_run, cmd_launch, cmd_sweep, cmd_merge, cmd_search)
# Commands that only read the store, or serve it (board): no training library is imported,
# so none is quieted.
_READ_ONLY = (cmd_runs, cmd_status, cmd_front, cmd_board, cmd_archive, cmd_replay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func in _READ_ONLY:
            from workbench.library_output import quiet_loggers

            quiet_loggers()
        elif args.func not in _SPEC_FIRST:
            _quiet_libraries()
        return args.func(args)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run was ended KILLED", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
