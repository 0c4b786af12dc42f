"""`workbench run`, `launch`, `resume`, `status`, `runs` and `stop`: one run, and the runs
of a store.
"""

from __future__ import annotations

import sys

from workbench.cli.common import (
    checked_spec,
    format_table,
    printed_node_commands,
    reap_silent_runs,
    whole_run_id,
)
from workbench.tracking import run_listing


def cmd_run(args) -> int:
    spec = checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    if printed_node_commands(
        spec, ["run", args.spec, *(["--steps", str(args.steps)] if args.steps else [])]
    ):
        return 0
    from workbench.running.pipeline import run

    # The workbench's own bar or lines replace Lightning's bar (progress=False).
    result = run(spec, progress=False, observers=progress_observers(args, spec))
    if result.run_id is not None:
        _print_run_end(result, spec)
    return 0


def progress_observers(args, spec) -> list:
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
        f"\nrun {result.run_id} {result.status}: experiment '{experiment}' in "
        f"{paths.tracking_uri(spec.tracking.uri)}"
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
        print(format_table(rows, ["objective", "base model", "this run"]))
    hints = [
        (f"workbench front --experiment {experiment}", "the Pareto front of the experiment's runs"),
        (f"workbench runs --experiment {experiment}", "its runs, their status and objectives"),
        ("workbench ui", "compare runs in the MLflow UI"),
        (f"workbench export {result.run_id} DIR", "the trained model as a folder"),
    ]
    width = max(len(command) for command, _ in hints)
    print("\nNext:\n" + "\n".join(f"  {command.ljust(width)}   # {why}" for command, why in hints))


def cmd_launch(args) -> int:
    spec = checked_spec(args.spec)
    if printed_node_commands(spec, ["run", args.spec]):
        return 0
    from workbench.running.launcher import launch

    handle = launch(spec)
    print(f"launched run {handle.run_id} (pid {handle.pid}); log: {handle.log_path}")
    print(f"`workbench status {handle.run_id}` / `workbench stop {handle.run_id}`")
    return 0


def cmd_resume(args) -> int:
    run_id = whole_run_id(args.run_id)
    from workbench.running.pipeline import run
    from workbench.running.resuming import resume_spec

    spec = resume_spec(run_id)
    if printed_node_commands(spec, ["resume", run_id]):
        return 0
    result = run(
        spec, run_id=run_id, resume=True, progress=False, observers=progress_observers(args, spec)
    )
    print(f"run {result.run_id} {result.status}")
    for name, value in result.objectives.items():
        print(f"  objective/{name} = {value:.4g}")
    return 0


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
    if reap_silent_runs(store, [run_listing.row(run, experiment)]):
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
    if reap_silent_runs(store, [run_listing.row(r, "") for r in running]):
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
    print(format_table(table, ["run_id", "name", "experiment", "step", "last loss", "ETA"]))
    print("\n`workbench status RUN_ID` shows one run (the first characters of its id are enough)")
    return 0


def cmd_runs(args) -> int:
    store = run_listing.open_store()
    rows = run_listing.list_runs(store, args.experiment)
    if reap_silent_runs(store, rows):
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
    print(format_table(table, columns if args.experiment else [*columns, "experiment"]))
    return 0


def cmd_stop(args) -> int:
    run_id = whole_run_id(args.run_id)
    from workbench.running.launcher import attach

    print(attach(run_id).stop())
    return 0
