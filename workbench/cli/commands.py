"""What each `workbench` subcommand does (`workbench.cli.main` parses the arguments and calls these).

Each ``cmd_<name>(args)`` returns the process exit code; a WorkbenchError it raises is printed
as one line by :func:`workbench.cli.main.main`. The heavy libraries are imported inside each
command, so `workbench --help` and a wrong spec answer fast.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from workbench.spec.errors import MissingPackage, WorkbenchError
from workbench.tracking import run_listing


def _quiet_libraries() -> None:
    # Library chatter (Lightning tips, HF progress bars) hides the workbench's own output.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # "Downloading artifacts"
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' levels on import; ours must come after)

    from workbench.running.library_output import quiet_loggers

    quiet_loggers()
    # Libraries' deprecation chatter is hidden; our own RuntimeWarnings (e.g. where unsent
    # metrics were saved) must stay visible.
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def _front_html(args, name: str) -> Path:
    """Where a command writes its front plot: ``--html``, else ``<name>-front.html`` beside
    the local store."""
    from workbench.spec import paths

    return Path(args.html) if args.html else paths.default_store_dir() / f"{name}-front.html"


def _format_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    widths = {
        c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns
    }
    lines = [
        "  ".join(c.ljust(widths[c]) for c in columns),
        "  ".join("-" * widths[c] for c in columns),
    ]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


# What the demo suggests next: the two faces of the workbench, as the README presents them.
DEMO_NEXT = (
    "\nNext: `workbench ui` serves the MLflow UI on http://127.0.0.1:5000 to compare the runs;\n"
    "`workbench lab` opens the teaching notebooks in JupyterLab (token-protected, on localhost;\n"
    "it needs the notebook packages: `scripts/setup.sh ui`)."
)


def cmd_demo(args) -> int:
    from workbench.spec.run_spec import RunSpec
    from workbench.studies.sweep import run_sweep, weight_grid

    spec = RunSpec.parse(
        {
            "data": {"source": "order"},
            "train": {"steps": args.steps, "eval_every": max(1, args.steps // 3)},
            "tracking": {"experiment": args.experiment},
        }
    )
    weights = weight_grid(args.points)
    figure = _front_html(args, args.experiment)
    print(f"Weight sweep on 'order': {len(weights)} runs, correctness weights {weights}")
    result = run_sweep(spec, weights, progress=_show_progress(args), figure_path=figure)
    _print_sweep(result, args.experiment)
    print(DEMO_NEXT)
    return 0


def _print_sweep(result, experiment: str) -> None:
    """The sweep's runs with their objectives (front marked), the base model and hypervolumes."""
    from workbench.spec import paths

    names = result.front.names
    rows = []
    for label, point, on_front in zip(result.front.labels, result.front.points, result.front.mask):
        row = {"run": label, **{n: float(v) for n, v in zip(names, point)}}
        row["front"] = "*" if on_front else ""
        rows.append(row)
    print()
    print(_format_table(rows, ["run", *names, "front"]))
    ref = ", ".join(f"{n}={v:g}" for n, v in zip(names, result.front.reference))
    print(
        "\nbase model: "
        + ", ".join(
            f"{n}={result.base_objectives[n]:.4g}" for n in names if n in result.base_objectives
        )
    )
    print(
        f"hypervolume (reference {ref}): sweep {result.front.hypervolume:.4g}, "
        f"base model {result.base_hypervolume:.4g}"
    )
    print(f"front plot: {result.figure_path}")
    print(
        f"runs: experiment '{experiment}' in {paths.tracking_uri()} (parent run {result.parent_run_id})"
    )


def cmd_sweep(args) -> int:
    spec = _checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    from workbench.studies.sweep import run_sweep

    experiment = spec.tracking.experiment
    figure = _front_html(args, f"{experiment}-sweep")
    result = run_sweep(
        spec,
        points=args.points,
        design=args.design,
        seed=args.seed,
        parallel=args.parallel,
        progress=_show_progress(args) and args.parallel == 1,
        figure_path=figure,
    )
    _print_sweep(result, experiment)
    return 0


def cmd_build(args) -> int:
    from workbench.fronts.builders import check_builder

    check_builder(args.builder)  # before any training library loads, like the spec
    spec = _checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    from workbench.fronts.builders import build_front

    built = build_front(
        args.builder, spec, args.points, seed=args.seed, progress=_show_progress(args)
    )
    front = built.front
    rows = [
        {"run": label, **dict(zip(front.names, map(float, point))), "front": "*" if kept else ""}
        for label, point, kept in zip(front.labels, front.points, front.mask)
    ]
    print(_format_table(rows, ["run", *front.names, "front"]))
    print(
        f"\n{args.builder}: parent run {built.parent_run_id}; hypervolume {front.hypervolume:.4g} "
        f"(base model {built.base_hypervolume:.4g}); {len(built.training_run_ids)} training run(s), "
        f"{built.training_steps} steps, {built.seconds:.0f} s"
    )
    return 0


def cmd_search(args) -> int:
    from workbench.running import preflight
    from workbench.studies.search import check_counts, check_storage, load_config

    # The config is checked before torch, transformers, lightning or mlflow is imported.
    check_counts(args.trials, args.workers)
    spec, settings = load_config(
        args.spec,
        **{
            "train.steps": args.steps,
            "search.sampler": args.sampler,
            "search.storage": args.storage,
            "search.study": args.study,
        },
    )
    if settings.storage is not None:
        check_storage(settings.storage)
    preflight.check(spec)
    _quiet_libraries()
    from workbench.spec import paths
    from workbench.studies.search import run_search

    experiment = spec.tracking.experiment
    figure = _front_html(args, f"{experiment}-search")
    result = run_search(
        spec,
        settings,
        trials=args.trials,
        workers=args.workers,
        progress=_show_progress(args) and args.workers == 1,
        figure_path=figure,
    )
    names = list(result.front.names)
    from workbench.studies.search import trial_run_name

    # A front labels each trial's run by its run name, after its author's name on a shared
    # store ("ada: adapter.r=16 (trial 3)").
    front_labels = [label for label, mark in zip(result.front.labels, result.front.mask) if mark]

    def on_front(name: str) -> bool:
        return any(label == name or label.endswith(f": {name}") for label in front_labels)

    rows = [
        {
            "trial": o.number,
            "state": o.state,
            **o.params,
            **o.values,
            "front": "*" if on_front(trial_run_name(o.number, o.params)) else "",
        }
        for o in result.trials
    ]
    params = list(dict.fromkeys(k for o in result.trials for k in o.params))
    print()
    print(_format_table(rows, ["trial", "state", *params, *names, "front"]))
    ref = (
        ", ".join(f"{n}={v:g}" for n, v in zip(names, result.front.reference))
        if result.front.reference is not None
        else "none"
    )
    print(
        f"\nhypervolume (reference {ref}): study {result.front.hypervolume:.4g}, "
        f"base model {result.base_hypervolume:.4g}"
    )
    print(f"front plot: {result.figure_path}")
    print(
        f"runs: experiment '{experiment}' in {paths.tracking_uri()} (parent run {result.parent_run_id}); "
        f"Optuna study '{result.study_name}' in {result.storage}"
    )
    return 0


def _show_progress(args) -> bool:
    """Progress bars on a terminal only: redirected to a file or a CI log, a bar's redraws
    would bury the output (the runs' own lines still print)."""
    return not args.no_progress and sys.stdout.isatty()


def _checked_spec(path: str, **changes):
    """The spec at ``path``, validated and checked against this machine (its data file and
    model folder exist) before torch, transformers, lightning or mlflow is imported, so a
    wrong spec is answered at once. Library output is quieted afterwards."""
    from workbench.running import preflight
    from workbench.spec.run_spec import RunSpec

    spec = RunSpec.from_file(path)
    if changes:
        spec = spec.updated(**changes)
    preflight.check(spec)
    _quiet_libraries()
    return spec


def _printed_node_commands(spec, workbench_args: list[str]) -> bool:
    """A multi-node spec started by hand: print the command for each node instead (True)."""
    from workbench.running import cluster

    if not cluster.needs_external_launch(spec.train):
        return False
    print(cluster.torchrun_commands(spec.train, workbench_args))
    return True


def cmd_run(args) -> int:
    spec = _checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    if _printed_node_commands(
        spec, ["run", args.spec, *(["--steps", str(args.steps)] if args.steps else [])]
    ):
        return 0
    from workbench.running.pipeline import run

    # The workbench's own bar or lines replace Lightning's bar (progress=False).
    result = run(spec, progress=False, observers=_progress_observers(args, spec))
    if result.run_id is not None:
        _print_run_end(result, spec)
    return 0


def _progress_observers(args, spec) -> list:
    """How a run in this process shows its progress: on a terminal, the workbench's bar
    (step, loss, ETA); redirected to a file or a pipe, one flushed line per logged step;
    with --no-progress, nothing until the end."""
    from workbench.running.progress import ProgressBar, ProgressLines

    if args.no_progress:
        return []
    if sys.stdout.isatty():
        return [ProgressBar()]
    return [ProgressLines(log_every=spec.train.log_every)]


def _print_run_end(result, spec) -> None:
    """Where the run is stored, its objectives against the base model's (its step-0
    evaluation), and what to do next."""
    from workbench.spec import paths

    experiment = spec.tracking.experiment
    print(
        f"\nrun {result.run_id} {result.status}: experiment '{experiment}' in {paths.tracking_uri(spec.tracking.uri)}"
    )
    base = result.trajectory[0][1] if result.trajectory and result.trajectory[0][0] == 0 else {}
    rows = [
        {
            "objective": f"{name} ({spec.objective(name).direction})",
            "base model": base.get(name, ""),
            "this run": value,
        }
        for name, value in result.objectives.items()
    ]
    if rows:
        print(_format_table(rows, ["objective", "base model", "this run"]))
    hints = [
        (f"workbench front --experiment {experiment}", "the Pareto front of the experiment's runs"),
        (f"workbench runs --experiment {experiment}", "its runs, their status and objectives"),
        ("workbench ui", "compare runs in the MLflow UI"),
        (f"workbench export {result.run_id} DIR", "the trained model as a folder"),
    ]
    width = max(len(command) for command, _ in hints)
    print("\nNext:\n" + "\n".join(f"  {command.ljust(width)}   # {why}" for command, why in hints))


def cmd_launch(args) -> int:
    spec = _checked_spec(args.spec)
    if _printed_node_commands(spec, ["run", args.spec]):
        return 0
    from workbench.running.launcher import launch

    handle = launch(spec)
    print(f"launched run {handle.run_id} (pid {handle.pid}); log: {handle.log_path}")
    print(f"`workbench status {handle.run_id}` / `workbench stop {handle.run_id}`")
    return 0


def cmd_resume(args) -> int:
    run_id = _whole_run_id(args.run_id)
    from workbench.running.pipeline import resume_spec, run

    spec = resume_spec(run_id)
    if _printed_node_commands(spec, ["resume", run_id]):
        return 0
    result = run(
        spec, run_id=run_id, resume=True, progress=False, observers=_progress_observers(args, spec)
    )
    print(f"run {result.run_id} {result.status}")
    for name, value in result.objectives.items():
        print(f"  objective/{name} = {value:.4g}")
    return 0


def _reap_silent_runs(store, rows) -> list[str]:
    """End FAILED the RUNNING runs among ``rows`` whose process is gone (the reaper decides);
    return their ids. A run whose heartbeat is fresh is alive, so when every RUNNING run has
    one, the reaper (and the MLflow import it needs) is skipped."""
    silent = [r for r in rows if r.status == "RUNNING" and not r.recently_alive()]
    if not silent:
        return []
    from workbench.running import liveness

    reaped = liveness.reap_dead_runs(store.client(), sorted({r.experiment_id for r in silent}))
    for run_id in reaped:
        print(f"note: run {run_id} had died without ending; it is now FAILED")
    return reaped


def _status_line(p) -> str:
    row = p.row
    loss = f"{p.last_loss:.4g}" if p.last_loss is not None else "-"
    step_s = f"{p.step_s:.3g} s/step" if p.step_s is not None else "- s/step"
    eta = f", ETA {run_listing.format_duration(p.eta_s)}" if row.status == "RUNNING" else ""
    return (
        f"step {row.step_of_total}, last loss {loss}, {step_s}, "
        f"elapsed {run_listing.format_duration(p.elapsed_s)}{eta}"
    )


def cmd_status(args) -> int:
    store = run_listing.open_store()
    if args.run_id is None:
        return _print_runs_in_progress(store)
    run = run_listing.find_run(store, args.run_id)
    experiments = store.experiments()
    experiment = experiments.get(run.experiment_id, run.experiment_id)
    if _reap_silent_runs(store, [run_listing.row(run, experiment)]):
        run = run_listing.find_run(store, run.run_id)
    p = run_listing.progress_of(run, experiment)
    row = p.row
    print(f"run {row.run_id} ({row.name}, experiment '{row.experiment}'): {row.status}")
    if row.kind == "run":
        print(_status_line(p))
    if p.phase:
        print(f"now: {p.phase}")
    if row.objectives:
        print("objectives: " + ", ".join(f"{k}={v:.4g}" for k, v in row.objectives.items()))
    if p.error:
        print(f"error: {p.error}")
    return 0


def _print_runs_in_progress(store) -> int:
    """``workbench status`` with no id: every RUNNING run, its step, last loss and ETA."""
    running = store.runs(status="RUNNING")
    experiments = store.experiments()
    if _reap_silent_runs(store, [run_listing.row(r, "") for r in running]):
        running = store.runs(status="RUNNING")
    if not running:
        print(f"no runs in progress in {store.tracking_uri}; `workbench runs` lists every run")
        return 0
    table = []
    for run in running:
        p = run_listing.progress_of(run, experiments.get(run.experiment_id, run.experiment_id))
        table.append(
            {
                "run_id": p.row.run_id,
                "name": p.row.name or "-",
                "experiment": p.row.experiment,
                "step": p.row.step_of_total or "-",
                "last loss": f"{p.last_loss:.4g}" if p.last_loss is not None else "-",
                "ETA": run_listing.format_duration(p.eta_s),
            }
        )
    print(f"runs in progress: {len(table)}")
    print(_format_table(table, ["run_id", "name", "experiment", "step", "last loss", "ETA"]))
    print("\n`workbench status RUN_ID` shows one run (the first characters of its id are enough)")
    return 0


def cmd_runs(args) -> int:
    store = run_listing.open_store()
    rows = run_listing.list_runs(store, args.experiment)
    if _reap_silent_runs(store, rows):
        rows = run_listing.list_runs(store, args.experiment)
    if not rows:
        print(f"no runs yet in {store.tracking_uri}")
        return 0
    names = {r.run_id: r.name for r in rows}
    table = []
    for r in rows:
        table.append(
            {
                "run_id": r.run_id,
                "name": r.name or "-",
                "status": r.status,
                "step": r.step_of_total or "-",
                "objectives": ", ".join(f"{k}={v:.4g}" for k, v in r.objectives.items()) or "-",
                "parent": f"{names.get(r.parent, '')} {r.parent[:8]}".strip() if r.parent else "-",
                "experiment": r.experiment,
            }
        )
    columns = ["run_id", "name", "status", "step", "objectives", "parent"]
    print(_format_table(table, columns if args.experiment else [*columns, "experiment"]))
    return 0


def _whole_run_id(run_id: str) -> str:
    """The id of the one run ``run_id`` names: a whole id or its first characters."""
    return run_listing.find_run(run_listing.open_store(), run_id).run_id


def cmd_stop(args) -> int:
    run_id = _whole_run_id(args.run_id)
    from workbench.running.launcher import attach

    print(attach(run_id).stop())
    return 0


def cmd_front(args) -> int:
    store = run_listing.open_store()
    rows = run_listing.list_runs(store, args.experiment)  # an unknown experiment fails here
    _reap_silent_runs(store, rows)
    every = run_listing.run_records(store, args.experiment)
    parents = {
        r["run_id"]: r["run_name"]
        for r in every
        if r["tags"].get(run_listing.KIND_TAG) in ("sweep", "study")
    }
    runs = [r for r in every if r["status"] == "FINISHED" and r["run_id"] not in parents]
    if not runs:
        raise WorkbenchError(
            f"experiment '{args.experiment}' has no finished runs in {store.tracking_uri}"
        )
    from workbench.fronts import plots
    from workbench.fronts.finished_runs import front_from_runs

    front = front_from_runs(runs, args.objective or None)
    rows = run_listing.front_rows(front, runs, parents)
    print(
        _format_table(
            rows,
            ["sweep", "label", *front.names, "run_id"]
            if parents
            else ["label", *front.names, "run_id"],
        )
    )
    if front.reference is not None:
        print(
            f"hypervolume: {front.hypervolume:.4g} (reference {list(map(float, front.reference))})"
        )
    out = _front_html(args, args.experiment)
    plots.write_html(plots.front_figure(front), out)
    print(f"front plot: {out}")
    return 0


def cmd_ui(args) -> int:
    from workbench.serving.servers import mlflow_server, serve_in_foreground
    from workbench.spec import paths

    uri = paths.tracking_uri()
    root = paths.artifact_root(uri)
    server = mlflow_server(
        "MLflow UI",
        uri,
        host=args.host,
        port=args.port,
        options=["--default-artifact-root", root] if root else [],
    )
    server.check_port()
    print(f"starting the MLflow UI for {uri} ...", flush=True)

    def ready(server):
        chosen = f" (--port 0: free port {server.port})" if args.port == 0 else ""
        print(
            f"MLflow UI on {server.url}{chosen}; Ctrl-C stops it (server log: {server.log_path})",
            flush=True,
        )

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("MLflow UI stopped", flush=True)
    return code


def cmd_lab(args) -> int:
    import importlib.util
    import secrets

    from workbench.serving.servers import jupyterlab_server, serve_in_foreground
    from workbench.spec import paths

    root = Path(args.dir) if args.dir else (paths.checkout_root() or Path.cwd()) / "notebooks"
    if not root.is_dir():
        print(f"error: no folder {root}; pass the notebooks' folder with --dir", file=sys.stderr)
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        raise MissingPackage(
            "JupyterLab is not installed in this environment; `scripts/setup.sh ui` "
            "installs it with the notebook packages"
        )
    token = secrets.token_hex(24)  # a fresh token each start; only the printed URL carries it
    # No news feed and no news pop-up over the cells (servers.LAB_DISABLED_PLUGINS).
    server = jupyterlab_server(root, token=token, host=args.host, port=args.port)
    server.check_port()
    print(f"starting JupyterLab on {root} ...", flush=True)

    def ready(server):
        print(
            f"JupyterLab on {server.url}/lab?token={token}\nCtrl-C stops it (server log: "
            f"{server.log_path})",
            flush=True,
        )

    code = serve_in_foreground(server, on_ready=ready)
    if code == 0:
        print("JupyterLab stopped", flush=True)
    return code


def cmd_board(args) -> int:
    from workbench.serving.board.serve import run_board

    return run_board(args)


def cmd_archive(args) -> int:
    from workbench.tracking.replay import archive_experiment

    summary = archive_experiment(args.experiment, args.file, max_artifact_mb=args.max_artifact_mb)
    print(
        f"archived {summary.runs} runs of '{args.experiment}' ({summary.metric_points} metric points, "
        f"{summary.artifacts} artifacts) to {summary.path}"
    )
    for what, items in (
        ("unfinished runs left out", summary.skipped_runs),
        (f"artifacts over {args.max_artifact_mb:g} MB left out", summary.skipped_artifacts),
    ):
        if items:
            print(f"{what}: {', '.join(items)}")
    print(f"replay it elsewhere with: workbench replay {summary.path.name}")
    return 0


def cmd_replay(args) -> int:
    from workbench.tracking.replay import replay_archive

    summary = replay_archive(args.file, experiment=args.experiment)
    print(
        f"replayed {len(summary.run_ids)} runs into experiment '{summary.experiment}'; open them with "
        f"ParetoExplorer('{summary.experiment}') in a notebook, `workbench front --experiment "
        f"{summary.experiment}` or `workbench ui`"
    )
    return 0


def cmd_export(args) -> int:
    from workbench.running.export import export_run

    run_id = _whole_run_id(args.run_id)
    folder = export_run(run_id, args.dir)
    print(f"exported run {run_id} to {folder} (load with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_merge(args) -> int:
    from workbench.merging.catalog import METHODS as MERGE_METHODS
    from workbench.merging.catalog import check_settings
    from workbench.spec.errors import SpecError

    # Settings are checked before torch is imported, so a mistake is answered at once.
    lines_alpha, lines_beta = args.lines if args.lines else (None, None)
    options = {
        "density": args.density,
        "majority_sign_method": args.majority_sign,
        "gamma": args.gamma,
        "lines_alpha": lines_alpha,
        "lines_beta": lines_beta,
        "seed": args.seed,
    }
    if args.grid is not None:
        if len(args.run_ids) != 2 or args.weights:
            raise SpecError(
                "--grid interpolates between exactly two runs (weights 1-c, c); "
                "give two run ids and no --weights"
            )
        if args.method in MERGE_METHODS and MERGE_METHODS[args.method].learned:
            raise SpecError(
                f"--method {args.method} learns its coefficients; --grid takes a method with given weights"
            )
        for c in args.grid:
            check_settings(args.method, 2, (1 - c, c), **options)
    else:
        check_settings(args.method, len(args.run_ids), args.weights, **options)
    _quiet_libraries()
    from workbench.merging.runs import merge_grid, merge_runs

    if args.grid is not None:
        result = merge_grid(*args.run_ids, args.grid, args.method, run_name=args.name, **options)
        rows = [
            {
                "coefficient": r.coefficient,
                **r.objectives,
                "front": "*" if on else "",
                "run_id": r.run_id,
            }
            for r, on in zip(result.runs, _front_marks(result.front, result.runs))
        ]
        print(_format_table(rows, ["coefficient", *result.front.names, "front", "run_id"]))
        print(f"hypervolume: {result.front.hypervolume:.4g}; parent run {result.parent_run_id}")
        return 0
    result = merge_runs(
        args.run_ids,
        args.method,
        args.weights,
        run_name=args.name,
        adamerging_steps=args.steps,
        **options,
    )
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


def cmd_prepare(args) -> int:
    """Build (or find) the base model a spec names, so runs later only load it: a workshop
    builds the tiny base once before the class instead of once per run."""
    from workbench.spec.run_spec import RunSpec

    if args.spec:
        spec = _checked_spec(args.spec)  # quiets the libraries once the spec is checked
    else:
        spec = RunSpec.parse({})
        _quiet_libraries()
    from workbench.models.loading import load_base

    started = time.perf_counter()
    base = load_base(spec.model, log=lambda line: print(line, flush=True))
    params = sum(p.numel() for p in base.model.parameters())
    scores = base.info.get("exact_match", {})
    print(
        f"base model '{base.name}' ready: {params:,} parameters "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    if scores:
        print(
            "held-out exact match per task: " + ", ".join(f"{k} {v:.0%}" for k, v in scores.items())
        )
    return 0
