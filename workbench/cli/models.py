"""`workbench models`, `prepare` and `export`: the built-in bases, the base model ahead of
runs, a run's model as a folder."""

from __future__ import annotations

import time

from workbench.cli.common import checked_spec, whole_run_id
from workbench.running.library_output import quiet_process


def cmd_prepare(args) -> int:
    """Build (or find) the base model a spec names, so runs later only load it: a workshop
    builds the tiny base once before the class instead of once per run."""
    from workbench.models.bases import BUILTIN_BASES
    from workbench.spec.run_spec import RunSpec

    if args.spec in BUILTIN_BASES:
        spec = RunSpec.parse({"model": {"name": args.spec}})
        quiet_process()
    elif args.spec:
        spec = checked_spec(args.spec)  # quiets the libraries once the spec is checked
    else:
        spec = RunSpec.parse({})
        quiet_process()
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


def cmd_export(args) -> int:
    from workbench.running.export import export_run

    run_id = whole_run_id(args.run_id)
    folder = export_run(run_id, args.dir)
    print(f"exported run {run_id} to {folder} (load with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_models(args) -> int:
    """The built-in bases: what each is, whether this machine can load it, whether it is built."""
    from workbench.models.bases import BUILTIN_BASES
    from workbench.spec.run_spec import RunSpec

    default = RunSpec.parse({}).model
    rows = []
    for base in BUILTIN_BASES.values():
        cached = base.cached(default)
        installed = base.installed()
        rows.append(
            (
                base.name,
                "yes" if installed else "no",
                "yes" if cached else ("no" if installed else "-"),
                base.licence,
                base.size(default),
            )
        )
    header = ("name", "installed", "cached", "licence", "size")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print()
    for base in BUILTIN_BASES.values():
        print(f"{base.name}: {base.description}")
        print(f"    source: {base.source}")
        if not base.installed() and base.setup:
            print(f"    not installed: {base.setup}")
    print(
        "\nUse one as `model: NAME` in a spec (or `model.name`); `workbench prepare NAME` builds "
        "or converts it into the cache ahead of runs."
    )
    return 0
