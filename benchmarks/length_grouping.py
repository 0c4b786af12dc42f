"""Padding and DPO throughput with ``train.group_by_length`` off and on.

    python benchmarks/length_grouping.py            # 5 runs a setting, 24 steps each (about 15 min
                                                    # on 2 busy cores)
    python benchmarks/length_grouping.py --quick    # 1 run a setting, 4 steps: a smoke test of the
                                                    # script

DPO on a JSONL file of `sort` pairs whose lengths vary widely (2 to 30 numbers, so a side is
7 to 64 tokens; the rejected completion is the sorted list cut short or with two numbers
swapped, so the two sides of a pair differ too), 16 pairs a batch, one epoch of 384 rows,
on a randomly initialised tiny Llama (hidden 256, 4 layers, the built-in tokenizer, no pretraining:
throughput does not depend on the weights). Each run is its own process, the two settings
alternating. Per run: the pad fraction of the training batches as collated (pad positions
of the attention masks over all positions, every micro-batch) and the tokens/s of the steps
after the first two (non-pad tokens over the steps' wall time, and over the process's CPU
time, which a busy machine disturbs less; the reference log-probs are precomputed once before
training and are not in it). The table gives each setting's median over its runs; the
headline is the speed-up in tokens/s, ``BENCH length_grouping_tokens_per_s_ratio <on / off>
x``, with the CPU-time ratio and the pad fractions beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average
from run_figures import StepMarks

WARMUP = 2
ROWS, BATCH = 384, 16


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            numbers = [rng.randint(0, 99) for _ in range(rng.randint(2, 30))]
            chosen = sorted(numbers)
            if rng.random() < 0.5:
                rejected = chosen[: max(1, len(chosen) // 2)]
            else:
                rejected = list(chosen)
                i, j = rng.sample(range(len(rejected)), 2)
                rejected[i], rejected[j] = rejected[j], rejected[i]
            words = lambda xs: " " + " ".join(map(str, xs))  # noqa: E731
            f.write(
                json.dumps(
                    {
                        "prompt": "sort" + words(numbers) + ":",
                        "chosen": words(chosen),
                        "rejected": words(rejected),
                    }
                )
                + "\n"
            )


def spec_dict(data: str, grouped: bool, steps: int, uri: str) -> dict:
    return {
        "model": {
            "name": "tiny",
            "tiny": {"hidden_size": 256, "layers": 4, "heads": 4, "pretrain_steps": 0},
        },
        "data": {"source": data, "train_size": ROWS, "eval_fraction": 0.04},
        "method": {"name": "dpo", "beta": 0.1},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "objectives": [
            {"name": "pairs_right", "direction": "max", "source": "term:reward_accuracy"}
        ],
        "train": {
            "steps": steps,
            "batch_size": BATCH,
            "max_length": 128,
            "eval_every": steps,
            "group_by_length": grouped,
            "seed": 0,
        },
        "eval": {"batch_size": BATCH, "samples_logged": 0, "max_new_tokens": 1},
        "tracking": {"uri": uri, "experiment": "length-grouping", "log_model": False},
    }


def child(data: str, grouped: bool, steps: int) -> dict:
    """One run in this process; its pad fraction and tokens/s."""
    import workbench
    from workbench.methods.base import WorkbenchModule
    from workbench.running.events import RunObserver

    counts = {"real": 0, "all": 0}
    plain_loader = WorkbenchModule.train_dataloader

    def counting_loader(self):  # the training batches only, exactly as collated
        loader = plain_loader(self)
        collate = loader.collate_fn

        def counted(items):
            batch = collate(items)
            counts["real"] += int(batch["attention_mask"].sum())
            counts["all"] += batch["attention_mask"].numel()
            return batch

        loader.collate_fn = counted
        return loader

    marks = StepMarks()

    class Marks(RunObserver):
        def on_step(self, step, metrics):
            marks.note(step, round(metrics["perf/tokens_per_s"] * metrics["perf/step_s"]))

    WorkbenchModule.train_dataloader = counting_loader
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        result = workbench.run(
            workbench.RunSpec.parse(spec_dict(data, grouped, steps, uri)),
            log=lambda *a: None,
            observers=[Marks()],
        )
    timed = marks.window(WARMUP, steps)
    return {
        "status": result.status,
        "pad_fraction": 1 - counts["real"] / counts["all"],
        "tokens_per_s": timed["tokens"] / timed["wall_s"],
        "tokens_per_cpu_s": timed["tokens"] / timed["cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 run a setting, 4 steps (a smoke test)"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per setting (default 5)")
    parser.add_argument(
        "--steps", type=int, default=None, help="DPO steps per run (default 24: one epoch)"
    )
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.quick else ROWS // BATCH)
    if args.child:
        print("RESULT " + json.dumps(child(args.data, args.child == "on", steps)))
        return 0
    runs = args.runs or (1 if args.quick else 5)

    import torch

    results: dict[str, list[dict]] = {"off": [], "on": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        write_pairs(data, ROWS + 16)
        # The children share one cache (the tiny model is built by the first) and one thread
        # count, so the settings differ only in the batches.
        env = {**os.environ, "WORKBENCH_CACHE": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "1"}
        for _ in range(runs):
            for setting in ("off", "on"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        setting,
                        "--data",
                        str(data),
                        "--steps",
                        str(steps),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode or not lines:
                    print(
                        f"error: the {setting} run failed:\n{out.stderr[-3000:]}", file=sys.stderr
                    )
                    return 1
                result = json.loads(lines[-1][len("RESULT ") :])
                if result["status"] != "FINISHED":
                    print(f"error: the {setting} run ended {result['status']}", file=sys.stderr)
                    return 1
                results[setting].append(result)
    seconds = time.perf_counter() - started

    print(
        f"DPO, {ROWS} sort pairs of 2-30 numbers, batch {BATCH}, {steps} steps, "
        f"{runs} run(s) a setting, "
        f"1 torch thread; torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} cores; {seconds:.0f} s; "
        f"load average {load_average()}"
    )
    print()
    print(
        f"{'group_by_length':<18}{'pad fraction':>14}{'tokens/s':>10}"
        f"{'tokens/CPU-s':>14}   tokens/s of each run"
    )
    median = {
        key: {s: statistics.median(r[key] for r in rows) for s, rows in results.items()}
        for key in ("pad_fraction", "tokens_per_s", "tokens_per_cpu_s")
    }
    for setting, rows in results.items():
        each = ", ".join(f"{r['tokens_per_s']:.0f}" for r in rows)
        print(
            f"{setting:<18}{median['pad_fraction'][setting]:>14.3f}{median['tokens_per_s'][setting]:>10.0f}"
            f"{median['tokens_per_cpu_s'][setting]:>14.0f}   {each}"
        )
    ratio = {
        key: median[key]["on"] / median[key]["off"] for key in ("tokens_per_s", "tokens_per_cpu_s")
    }
    print()
    print(
        f"BENCH length_grouping_tokens_per_s_ratio {ratio['tokens_per_s']:.2f} x "
        f"tokens_per_cpu_s_ratio={ratio['tokens_per_cpu_s']:.2f} "
        f"pad_fraction_off={median['pad_fraction']['off']:.3f} "
        f"pad_fraction_on={median['pad_fraction']['on']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
