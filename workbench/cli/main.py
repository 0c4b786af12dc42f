"""The `workbench` command line: the parser of every command, and :func:`main`.

The commands live one module per group: :mod:`.runs` (run, launch, resume, status, runs,
stop), :mod:`.fronts` (demo, sweep, search, build, front), :mod:`.merging` (merge),
:mod:`.models` (prepare, export), :mod:`.servers` (ui, lab, board) and :mod:`.archives`
(archive, replay); each ``cmd_<name>(args)`` returns the process exit code, and a
WorkbenchError it raises is printed here as one line.
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli.archives import cmd_archive, cmd_replay
from workbench.cli.fronts import cmd_build, cmd_demo, cmd_front, cmd_search, cmd_sweep
from workbench.cli.merging import cmd_merge
from workbench.cli.models import cmd_export, cmd_models, cmd_prepare
from workbench.cli.runs import cmd_launch, cmd_resume, cmd_run, cmd_runs, cmd_status, cmd_stop
from workbench.cli.servers import cmd_board, cmd_lab, cmd_ui
from workbench.running import allocator
from workbench.running.library_output import quiet_loggers, quiet_process
from workbench.spec.errors import WorkbenchError

DEMO_HELP = """Build (or load) the tiny base, run a weight sweep of multi-objective SFT on the
'order' task (correctness against brevity) in this process, print the Pareto front with its
hypervolume against the task's reference point, and write the front as an HTML plot."""


SWEEP_HELP = """Train one run per point on the simplex of training weights of the spec's weighted
objectives (those with a loss term; two or more), as children of one parent MLflow run that
records their Pareto front, its hypervolume (sweep/hypervolume, sweep/base_hypervolume,
sweep/front_size), front.json and the plot. --parallel 1 trains the runs one after another in
this process; --parallel K launches them as background processes, K at a time. Ctrl-C stops
the running children; every run ends KILLED, none is left RUNNING."""


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


BUILD_HELP = """Build a Pareto front of an mo-sft spec's weighted objectives in one of five ways
(workbench.fronts.builders): sweep (one run per point), conditioned (one weight-conditioned run
evaluated at every point), merging (two runs at the ends, merged at each coefficient; two
objectives), search (an Optuna study over the training weights) or mgda (one mgda-sft run per
point). It ends in one parent MLflow run (tag workbench.builder) holding the children, the
front, its hypervolume and the plot, and prints the front and what it cost."""


BOARD_HELP = """One MLflow tracking server on PostgreSQL for a lab or a class: a private
PostgreSQL server the board runs in a data folder (--data DIR: created on first use), or an
existing one (--database-url-file FILE or the environment variable WORKBENCH_DATABASE_URL).
Artifacts are kept in a folder and served through the tracking server. It prints the
MLFLOW_TRACKING_URI students set and the Optuna storage URL for `workbench search --storage`
(a second database on the same server); passwords are never printed. Ctrl-C or SIGTERM stops
every server it started. See docs/board.md."""


MERGE_HELP = """Merge finished runs' models (full weights, or LoRA adapters as their deltas over
the base) in weight space, evaluate the merged model on the runs' objectives and record it as
a run (tag workbench.merge), so `workbench front` shows it beside the trained runs. Methods:
linear (a soup), task_arithmetic, magnitude_prune, ties, dare_linear, dare_ties, breadcrumbs,
breadcrumbs_ties, lines, adamerging. --grid C ... interpolates between two runs: one merged
run per coefficient c (weights 1-c, c) under one parent run that records their front."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Run, compare and teach fine-tuning methods; every run tracked in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="the main job: a tracked weight sweep ending in a Pareto front",
        description=DEMO_HELP,
    )
    p.add_argument("--points", type=int, default=5, help="sweep points (default 5)")
    p.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    p.add_argument("--experiment", default="demo", help="MLflow experiment name (default demo)")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they show only on a terminal)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "prepare",
        help="build the base model ahead (once per cache), e.g. before a workshop",
        description="Build (or find in the cache) the base model a spec names, the default tiny "
        "base without a spec, so the runs that follow only load it. Runs started at once on an "
        "empty cache build it once anyway (the others wait for that build); this does it ahead.",
    )
    p.add_argument(
        "spec",
        nargs="?",
        help="a YAML run spec whose model to prepare, or a built-in base's name "
        "(default: the tiny base)",
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "models",
        help="list the built-in bases, with installed and cached status",
        description="The base models `model.name` can name without a folder or a hub: where "
        "each comes from, its licence and size, whether this machine has what it needs "
        "(installed) and whether it is already built into the cache (cached).",
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "sweep",
        help="a weight sweep over 2+ objectives ending in a Pareto front",
        description=SWEEP_HELP,
    )
    p.add_argument("spec", help="path of a YAML run spec with two or more weighted objectives")
    p.add_argument(
        "--points",
        type=int,
        required=True,
        help="weight points (a grid over 3 objectives has 3, 6, 10, 15, ... points)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="runs at once (default 1: one after another in this process; K > 1: "
        "background processes)",
    )
    p.add_argument(
        "--design",
        choices=("grid", "random"),
        default="grid",
        help="grid: evenly spread over the weight simplex; random: uniform draws",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random design (default 0)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they show only on a terminal)"
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "search",
        help="a multi-objective Optuna search over spec fields, ending in a Pareto front",
        description=SEARCH_HELP,
    )
    p.add_argument("spec", help="path of a YAML run spec with a search: section (the space)")
    p.add_argument(
        "--trials", type=int, required=True, help="trials to run (shared by the workers)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the study (default 1: trials in this process)",
    )
    p.add_argument(
        "--sampler", choices=("nsga2", "gp"), help="override search.sampler (default nsga2)"
    )
    p.add_argument(
        "--storage", help="override search.storage: SQLAlchemy URL of the Optuna database"
    )
    p.add_argument(
        "--study", help="override search.study: the Optuna study name (an existing one continues)"
    )
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--html", help="where to write the front plot (default: next to the store)")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they show only on a terminal)"
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "build",
        help="a Pareto front by one of five builders: sweep, conditioned, merging, search, mgda",
        description=BUILD_HELP,
    )
    p.add_argument("builder", help="sweep, conditioned, merging, search or mgda")
    p.add_argument(
        "spec", help="path of a YAML run spec of mo-sft with two or more weighted objectives"
    )
    p.add_argument("--points", type=int, required=True, help="front points (search: trials)")
    p.add_argument("--seed", type=int, default=0, help="seed of the builder's sampling (default 0)")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they show only on a terminal)"
    )
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "run",
        help="train one run spec (YAML) in this process",
        description="Train the run described by a YAML RunSpec in this process, tracked in MLflow.",
    )
    p.add_argument("spec", help="path of a YAML run spec")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (on a terminal) or step lines (redirected): quiet until the end",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "launch",
        help="train a run spec in a background process",
        description="Start a run in its own process session; prints its run id.",
    )
    p.add_argument("spec", help="path of a YAML run spec")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser(
        "resume",
        help="continue a failed or killed run from its last checkpoint",
        description=(
            "Continue a FAILED/KILLED run from its last checkpoint, in the same MLflow run."
        ),
    )
    p.add_argument("run_id", help="the run's id, or its first characters")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (on a terminal) or step lines (redirected): quiet until the end",
    )
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser(
        "status",
        help="status, step of total, last loss and ETA of a run (or of the runs in progress)",
        description="Where a run stands: its status, step of total, last loss, "
        "time per step and (while it runs) the time left. With no run id: "
        "every run in progress.",
    )
    p.add_argument(
        "run_id",
        nargs="?",
        help="the run's id, or its first characters (the 8 that `runs` and `front` show); "
        "none: the runs in progress",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "runs",
        help="list runs: id, name, status, step of total, objectives, parent",
        description="List the store's runs (oldest first) with their status, step "
        "of total, objectives and parent sweep.",
    )
    p.add_argument("--experiment", help="only this MLflow experiment (default: all)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("stop", help="stop a launched run (it ends KILLED)")
    p.add_argument("run_id", help="the run's id, or its first characters")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser(
        "front",
        help="print and plot the Pareto front of an experiment's runs",
        description=(
            "Read an experiment's finished runs back from MLflow and compute their Pareto front."
        ),
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument(
        "--objective", action="append", help="objective name (repeat; default: all shared)"
    )
    p.add_argument("--html", help="where to write the front plot")
    p.set_defaults(func=cmd_front)

    p = sub.add_parser(
        "ui",
        help="serve the MLflow UI for the store on 127.0.0.1",
        description=(
            "Start the MLflow server/UI over the workbench's store "
            "(bound to 127.0.0.1 unless --host says otherwise)."
        ),
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=5000,
        help="port to serve on (default 5000; 0: any free port, printed when ready)",
    )
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "lab",
        help="serve JupyterLab on the teaching notebooks on 127.0.0.1, with a token",
        description=(
            "Start JupyterLab on the notebooks folder (bound to 127.0.0.1 unless --host says "
            "otherwise; token required, printed in the URL)."
        ),
    )
    p.add_argument("--dir", help="folder to serve (default: notebooks/ of this checkout)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8888,
        help="port to serve on (default 8888; 0: any free port, printed when ready)",
    )
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser(
        "board",
        help="a class's or lab's MLflow server on PostgreSQL, with the Optuna storage",
        description=BOARD_HELP,
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="run a private PostgreSQL server with its data in DIR (initdb on first use)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="an existing PostgreSQL database, postgresql://USER@HOST[:PORT]/DB (a password "
        "here is visible to other users: prefer the file or WORKBENCH_DATABASE_URL)",
    )
    p.add_argument(
        "--database-url-file", metavar="FILE", help="a file whose first line is the database URL"
    )
    p.add_argument(
        "--artifacts",
        metavar="DIR",
        help="the artifacts folder (default with --data: DIR/artifacts)",
    )
    p.add_argument(
        "--serve-artifacts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve artifacts through the tracking server (default; with --no-serve-artifacts "
        "clients write to the folder themselves)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help=(
            "interface the tracking server binds (default 127.0.0.1; 0.0.0.0 for a class's network)"
        ),
    )
    p.add_argument(
        "--port",
        type=int,
        default=5000,
        help="tracking server port (default 5000; 0: any free port)",
    )
    p.add_argument(
        "--db-host",
        default="127.0.0.1",
        help="with --data: interface PostgreSQL binds (default 127.0.0.1)",
    )
    p.add_argument(
        "--db-port",
        type=int,
        default=0,
        help="with --data: PostgreSQL's port (default 0: any free port)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="tracking server worker processes (default 2)"
    )
    p.add_argument(
        "--run-as",
        default="postgres",
        help="run as root: the unprivileged user PostgreSQL runs as (default postgres)",
    )
    p.set_defaults(func=cmd_board)

    p = sub.add_parser(
        "archive",
        help="write an experiment's finished runs into one file (for replay elsewhere)",
        description="Archive the finished runs of an experiment (params, tags, every metric point, "
        "small artifacts) into one zip file that `workbench replay` loads into another store.",
    )
    p.add_argument("experiment")
    p.add_argument("file", help="the zip file to write")
    p.add_argument(
        "--max-artifact-mb",
        type=float,
        default=5.0,
        help="leave out artifacts larger than this (model weights; default 5)",
    )
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser(
        "replay",
        help="load an archived experiment into this store, to explore recorded runs",
        description="Recreate the runs of a `workbench archive` file in the current MLflow store.",
    )
    p.add_argument("file")
    p.add_argument(
        "--experiment", help="experiment name to replay under (default: the archived name)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "export",
        help="write a run's merged weights + tokenizer as a model folder",
        description=(
            "Export a finished run as safetensors weights (adapters merged) plus tokenizer, "
            "loadable with from_pretrained."
        ),
    )
    p.add_argument("run_id", help="the run's id, or its first characters")
    p.add_argument("dir")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "merge",
        help="merge runs' models in weight space and record the merged model as a run",
        description=MERGE_HELP,
    )
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="finished runs of one base model")
    p.add_argument(
        "--method",
        default="task_arithmetic",
        help="merge method (default task_arithmetic; see docs/concepts.md)",
    )
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default 1 each)")
    p.add_argument(
        "--density",
        type=float,
        help="fraction of each task vector kept (ties, dare_*, magnitude_prune, breadcrumbs*)",
    )
    p.add_argument(
        "--majority-sign",
        choices=("total", "frequency"),
        default="total",
        help="how ties/dare_ties elect the sign (default total)",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=0.01,
        help="breadcrumbs: largest fraction dropped (default 0.01)",
    )
    p.add_argument(
        "--lines",
        type=float,
        nargs=2,
        metavar=("ALPHA", "BETA"),
        help="LiNeS scaling alpha + beta l/(L-1) of block l (default for --method lines: 0.5 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of DARE's random masks (default 0)")
    p.add_argument(
        "--steps", type=int, default=20, help="adamerging: optimisation steps (default 20)"
    )
    p.add_argument(
        "--grid",
        type=float,
        nargs="+",
        metavar="C",
        help="coefficients to interpolate two runs at (one merged run each, under a parent)",
    )
    p.add_argument("--name", help="run name of the merged run (or of the grid's parent)")
    p.set_defaults(func=cmd_merge)
    return parser


# Commands that validate a spec before the heavy imports (they quiet the libraries after).
_SPEC_FIRST = (cmd_run, cmd_launch, cmd_sweep, cmd_merge, cmd_search, cmd_build)
# Commands that train (or optimise merge coefficients) in this process.
_TRAINING = (cmd_demo, cmd_sweep, cmd_search, cmd_build, cmd_run, cmd_resume, cmd_merge)
# Commands that only read the store, or serve it (board): no training library is imported,
# so none is quieted.
_READ_ONLY = (cmd_runs, cmd_status, cmd_front, cmd_board, cmd_archive, cmd_replay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if argv is None and args.func in _TRAINING:
            # Before any import that allocates: a command that trains here runs on mimalloc
            # (workbench.running.allocator says why); a call with ``argv`` (in-process) not.
            allocator.restart_on_mimalloc("workbench.cli", sys.argv[1:])
        if args.func in _READ_ONLY:
            quiet_loggers()
        elif args.func not in _SPEC_FIRST:
            quiet_process()
        return args.func(args)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run was ended KILLED", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
