"""`workbench archive` and `replay`: an experiment's finished runs to one file, and back."""

from __future__ import annotations


def cmd_archive(args) -> int:
    from workbench.tracking.replay import archive_experiment

    summary = archive_experiment(args.experiment, args.file, max_artifact_mb=args.max_artifact_mb)
    print(
        f"archived {summary.runs} runs of '{args.experiment}' "
        f"({summary.metric_points} metric points, "
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
        f"replayed {len(summary.run_ids)} runs into experiment '{summary.experiment}'; "
        "open them with "
        f"ParetoExplorer('{summary.experiment}') in a notebook, `workbench front --experiment "
        f"{summary.experiment}` or `workbench ui`"
    )
    return 0
