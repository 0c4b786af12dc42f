"""`workbench demo`, `sweep`, `search`, `build` and `front`: Pareto fronts, built by
training runs or read from finished ones.
"""

from __future__ import annotations

from workbench.cli.common import (
    checked_spec,
    format_table,
    front_html,
    reap_silent_runs,
    show_progress,
)
from workbench.running.library_output import quiet_process
from workbench.spec.errors import WorkbenchError
from workbench.spec.mlflow_names import KIND_STUDY, KIND_SWEEP, TAG_KIND
from workbench.tracking import run_listing

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
    figure = front_html(args, args.experiment)
    print(f"Weight sweep on 'order': {len(weights)} runs, correctness weights {weights}")
    result = run_sweep(spec, weights, progress=show_progress(args), figure_path=figure)
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
    print(format_table(rows, ["run", *names, "front"]))
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
        f"runs: experiment '{experiment}' in {paths.tracking_uri()} "
        f"(parent run {result.parent_run_id})"
    )


def cmd_sweep(args) -> int:
    spec = checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    from workbench.studies.sweep import run_sweep

    experiment = spec.tracking.experiment
    figure = front_html(args, f"{experiment}-sweep")
    result = run_sweep(
        spec,
        points=args.points,
        design=args.design,
        seed=args.seed,
        parallel=args.parallel,
        progress=show_progress(args) and args.parallel == 1,
        figure_path=figure,
    )
    _print_sweep(result, experiment)
    return 0


def cmd_build(args) -> int:
    from workbench.fronts.builders import check_builder

    check_builder(args.builder)  # before any training library loads, like the spec
    spec = checked_spec(args.spec, **({"train.steps": args.steps} if args.steps else {}))
    from workbench.fronts.builders import build_front

    built = build_front(
        args.builder, spec, args.points, seed=args.seed, progress=show_progress(args)
    )
    front = built.front
    rows = [
        {"run": label, **dict(zip(front.names, map(float, point))), "front": "*" if kept else ""}
        for label, point, kept in zip(front.labels, front.points, front.mask)
    ]
    print(format_table(rows, ["run", *front.names, "front"]))
    print(
        f"\n{args.builder}: parent run {built.parent_run_id}; hypervolume {front.hypervolume:.4g} "
        f"(base model {built.base_hypervolume:.4g}); "
        f"{len(built.training_run_ids)} training run(s), "
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
    quiet_process()
    from workbench.spec import paths
    from workbench.studies.search import run_search

    experiment = spec.tracking.experiment
    figure = front_html(args, f"{experiment}-search")
    result = run_search(
        spec,
        settings,
        trials=args.trials,
        workers=args.workers,
        progress=show_progress(args) and args.workers == 1,
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
    print(format_table(rows, ["trial", "state", *params, *names, "front"]))
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
        f"runs: experiment '{experiment}' in {paths.tracking_uri()} "
        f"(parent run {result.parent_run_id}); "
        f"Optuna study '{result.study_name}' in {result.storage}"
    )
    return 0


def cmd_front(args) -> int:
    store = run_listing.open_store()
    rows = run_listing.list_runs(store, args.experiment)  # an unknown experiment fails here
    reap_silent_runs(store, rows)
    every = run_listing.run_records(store, args.experiment)
    parents = {
        r["run_id"]: r["run_name"]
        for r in every
        if r["tags"].get(TAG_KIND) in (KIND_SWEEP, KIND_STUDY)
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
        format_table(
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
    out = front_html(args, args.experiment)
    plots.write_html(plots.front_figure(front), out)
    print(f"front plot: {out}")
    return 0
