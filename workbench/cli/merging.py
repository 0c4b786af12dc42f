"""`workbench merge`: finished runs' models merged in weight space, recorded as runs."""

from __future__ import annotations

from workbench.cli.common import format_table
from workbench.running.library_output import quiet_process


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
                f"--method {args.method} learns its coefficients; "
                "--grid takes a method with given weights"
            )
        for c in args.grid:
            check_settings(args.method, 2, (1 - c, c), **options)
    else:
        check_settings(args.method, len(args.run_ids), args.weights, **options)
    quiet_process()
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
        print(format_table(rows, ["coefficient", *result.front.names, "front", "run_id"]))
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
