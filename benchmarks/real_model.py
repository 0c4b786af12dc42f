"""What the methods do to a real chat model: SmolLM2-135M-Instruct, over seeds.

    python benchmarks/real_model.py                 # 3 seeds x (GRPO, RPO, LoRA SFT), the
                                                    # shipped examples as they are
    python benchmarks/real_model.py --only grpo     # one method
    python benchmarks/real_model.py --quick         # 1 seed, 1 small step each: a smoke test
    python benchmarks/real_model.py --quick --model tiny-fast   # the same on the test base

Each method runs the spec under ``examples/`` that a user would run (``workbench run
examples/real_grpo.yaml``), changing only ``train.seed`` and the store, on the built-in
``addition`` task (operands up to 20, asked as a question, rendered through the model's chat
template). The held-out rows are the task's fixed held-out prompts, never trained on; their
metrics are measured on the base before the first step and at the end of the run. Per method
and seed the table gives the base and final figures, the change and the wall time; below it
the median over the seeds with the spread (min to max). Headlines (DESIGN.md's BENCH lines):

- ``BENCH real_grpo_arithmetic_gain_points``: GRPO's change of held-out exact match, in points
  (target at least 10, within 15 minutes a seed);
- ``BENCH real_dpo_task_gain_points``: RPO's (DPO with the chosen answer's NLL) change of
  held-out exact match on pairs from the task (target at least 10);
- ``BENCH real_sft_heldout_loss_ratio``: LoRA SFT's held-out loss at the end over the base's
  (below 1 is a gain).

``final_number`` (the last integer of the answer is right, whatever surrounds it) is printed
beside exact match: the base restates the question ("18 + 9 = 27"), so exact match starts
near 0 and part of every gain is the answer's format; final_number shows how much is
arithmetic.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine_load import load_average

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    method: str  # as --only names it
    example: str  # the spec under examples/
    metric: str  # the objective the headline reads
    bench: str  # the BENCH line's name
    unit: str  # "points" (difference x 100) or "ratio" (final / base)
    target: str


CASES = (
    Case(
        "grpo",
        "real_grpo.yaml",
        "exact_match",
        "real_grpo_arithmetic_gain_points",
        "points",
        ">=10",
    ),
    Case("dpo", "real_rpo.yaml", "exact_match", "real_dpo_task_gain_points", "points", ">=10"),
    Case("sft", "real_sft_lora.yaml", "eval_loss", "real_sft_heldout_loss_ratio", "ratio", "<1"),
)


def change(case: Case, base: float, final: float) -> float:
    return 100 * (final - base) if case.unit == "points" else final / base


def spec_for(case: Case, seed: int, uri: str, quick: bool, model: str | None = None):
    import yaml

    import workbench

    raw = yaml.safe_load((ROOT / "examples" / case.example).read_text())
    if model:  # another base under the same recipe (the smoke test's cheap one)
        raw["model"] = model
    raw.setdefault("train", {})["seed"] = seed
    raw.setdefault("tracking", {})["uri"] = uri
    if quick:  # the script end to end, as cheaply as the real model allows
        raw["train"].update(steps=1, eval_every=1, batch_size=2)
        raw["data"].update(train_size=8, eval_size=4)
        raw["eval"]["max_new_tokens"] = 4
        if "group_size" in raw["method"]:
            raw["method"]["group_size"] = 2
    return workbench.RunSpec.parse(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 small step (a smoke test)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3)")
    parser.add_argument("--only", choices=[c.method for c in CASES], action="append")
    parser.add_argument(
        "--model", default=None, help="another base in place of the examples' (e.g. tiny-fast)"
    )
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    cases = [c for c in CASES if not args.only or c.method in args.only]

    import torch

    import workbench

    rows = []  # (case, seed, base objectives, final objectives, wall s)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for case in cases:
            for seed in range(seeds):
                spec = spec_for(case, seed, uri, args.quick, args.model)
                t0 = time.perf_counter()
                result = workbench.run(spec, log=lambda *a: None)
                wall = time.perf_counter() - t0
                if result.status != "FINISHED" or not result.trajectory:
                    print(
                        f"error: {case.method} seed {seed} ended {result.status}", file=sys.stderr
                    )
                    return 1
                base = result.trajectory[0][1]
                rows.append((case, seed, base, result.objectives, wall))
                print(
                    f"  {case.method} seed {seed}: {case.metric} {base[case.metric]:.3f} -> "
                    f"{result.objectives[case.metric]:.3f} ({wall:.0f} s)",
                    flush=True,
                )
    seconds = time.perf_counter() - started

    print()
    print(
        f"{args.model or 'SmolLM2-135M-Instruct'}, {seeds} seed(s) per method, "
        "the examples/ specs; "
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"{torch.get_num_threads()} threads; {seconds:.0f} s; load average {load_average()}"
    )
    print()
    header = f"{'method':<7}{'seed':>5}{'metric':>13}{'base':>8}{'final':>8}{'change':>9}"
    header += f"{'final_number':>22}{'wall s':>8}"
    print(header)
    for case, seed, base, final, wall in rows:
        numbers = (
            f"{base['final_number']:.3f} -> {final['final_number']:.3f}"
            if "final_number" in final
            else "-"
        )
        print(
            f"{case.method:<7}{seed:>5}{case.metric:>13}{base[case.metric]:>8.3f}"
            f"{final[case.metric]:>8.3f}{change(case, base[case.metric], final[case.metric]):>9.3f}"
            f"{numbers:>22}{wall:>8.0f}"
        )
    print()
    for case in cases:
        mine = [r for r in rows if r[0] is case]
        changes = [change(case, r[2][case.metric], r[3][case.metric]) for r in mine]
        walls = [r[4] for r in mine]
        median = statistics.median(changes)
        print(
            f"{case.method}: {case.metric} change median {median:.3f} "
            f"(spread {min(changes):.3f} to {max(changes):.3f} over seeds "
            f"{', '.join(str(r[1]) for r in mine)}); wall median {statistics.median(walls):.0f} s"
        )
        print(f"BENCH {case.bench} {median:.3f} {case.unit} target={case.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
