"""What the command groups share: the table they print, where a front plot goes, progress
on a terminal only, a spec checked before the heavy imports, and runs named by their id's
first characters.

The heavy libraries are imported inside each command, so `workbench --help` and a wrong spec
answer fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.running.library_output import quiet_process
from workbench.tracking import run_listing


def front_html(args, name: str) -> Path:
    """Where a command writes its front plot: ``--html``, else ``<name>-front.html`` beside
    the local store."""
    from workbench.spec import paths

    return Path(args.html) if args.html else paths.default_store_dir() / f"{name}-front.html"


def format_table(rows: list[dict], columns: list[str]) -> str:
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


def show_progress(args) -> bool:
    """Progress bars on a terminal only: redirected to a file or a CI log, a bar's redraws
    would bury the output (the runs' own lines still print)."""
    return not args.no_progress and sys.stdout.isatty()


def checked_spec(path: str, **changes):
    """The spec at ``path``, validated and checked against this machine (its data file and
    model folder exist) before torch, transformers, lightning or mlflow is imported, so a
    wrong spec is answered at once. Library output is quieted afterwards."""
    from workbench.running import preflight
    from workbench.spec.run_spec import RunSpec

    spec = RunSpec.from_file(path)
    if changes:
        spec = spec.updated(**changes)
    preflight.check(spec)
    quiet_process()
    return spec


def printed_node_commands(spec, workbench_args: list[str]) -> bool:
    """A multi-node spec started by hand: print the command for each node instead (True)."""
    from workbench.running import cluster

    if not cluster.needs_external_launch(spec.train):
        return False
    print(cluster.torchrun_commands(spec.train, workbench_args))
    return True


def whole_run_id(run_id: str) -> str:
    """The id of the one run ``run_id`` names: a whole id or its first characters."""
    return run_listing.find_run(run_listing.open_store(), run_id).run_id


def reap_silent_runs(store, rows) -> list[str]:
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
