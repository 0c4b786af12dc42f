"""`workbench prepare` and `export`: the base model ahead of runs, a run's model as a folder."""

from __future__ import annotations

import time

from workbench.cli.common import checked_spec, whole_run_id
from workbench.running.library_output import quiet_process


def cmd_prepare(args) -> int:
    """Build (or find) the base model a spec names, so runs later only load it: a workshop
    builds the tiny base once before the class instead of once per run."""
    from workbench.spec.run_spec import RunSpec

    if args.spec:
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
