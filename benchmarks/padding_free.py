"""Padding-free batches (``train.padding_free``) against padded ones: pad fraction and tokens/s.

    python benchmarks/padding_free.py            # the real chat model where its wheel is
                                                 # installed (else the tiny base), 3 repeats
    python benchmarks/padding_free.py --model tiny
    python benchmarks/padding_free.py --quick    # a tiny random base, 3 steps, 1 repeat: a
                                                 # smoke test (its figures mean little)

LoRA SFT (``workbench.run``, the default adapter settings, ``kernels: auto``) on chat rows of
mixed length: one user turn and one assistant turn, each of 1 to 100 words drawn from a
fixed list of common English words (log-uniform, so short turns are as common as long ones;
--quick: 1 to 10 words, the tiny base's tokenizer taking several tokens a word),
rendered by the model's chat template (SmolLM2-135M-Instruct's ChatML; the tiny base's
"role: content" lines), cut at ``max_length`` tokens. Batch 8. Settings:

- ``padded``: the batch as collated, every row padded to the longest;
- ``packed``: ``padding_free: true`` with its default budget (sequences no wider than the
  batch's longest row);
- ``packed_one``: ``padding_free: true`` with every row of the batch in one sequence
  (``padding_free_tokens`` = batch x max_length), what a varlen flash attention would run;
  under SDPA on a CPU the attention computes the whole square of that sequence.

Each run is its own process, the settings alternating (the order rotates each repeat) so
that load from other processes hits every setting alike. Per run: the pad fraction of what
the model was fed in training (pad positions over all positions of the input ids, every
training pass), the tokens/s of the steps after the first two (the rows' tokens over the
steps' wall time; and over the process's CPU time, which a busy machine disturbs less), and
the training's peak memory (``perf/peak_mem_mb``). The table gives each setting's median and
spread (min-max); the headline is the median over repeats of each repeat's tokens/s ratio,
packed over padded: ``BENCH padding_free_tokens_per_s_ratio <x> x target=>1``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_jobs import add_jobs_argument, run_repeat, side_by_side_note
from machine_load import load_average
from run_figures import StepMarks, throughput
from train_options import spread, versions

BATCH = 8
ROWS = 256
WARMUP = 2
SETTINGS = ("padded", "packed", "packed_one")
REAL_MODEL = "smollm2-135m-instruct"
COMMON_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could people "
    "my than first water been call who oil its now find long down day did get come made may "
    "part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much "
    "before line right too mean old any same tell boy follow came want show also around form "
    "three small set put end does another well large must big even such because turn here "
    "why ask went men read need land different home us move try kind hand picture again "
    "change off play spell air away animal house point page letter mother answer found study"
)
WORDS = COMMON_WORDS.split()


def write_rows(path: Path, n: int, most_words: int, seed: int = 0) -> None:
    """``n`` chat rows, each turn 1 to ``most_words`` words (log-uniform)."""
    rng = random.Random(seed)

    def text() -> str:
        words = round(math.exp(rng.uniform(0.0, math.log(most_words))))
        return " ".join(rng.choices(WORDS, k=words))

    with path.open("w") as handle:
        for _ in range(n):
            messages = [{"role": "user", "content": text()},
                        {"role": "assistant", "content": text()}]  # fmt: skip
            handle.write(json.dumps({"messages": messages}) + "\n")


def model_section(name: str) -> dict:
    if name == "quick":  # random weights: throughput does not depend on them
        return {"name": "tiny", "tiny": {"hidden_size": 64, "layers": 2, "heads": 2,
                                         "pretrain_steps": 0}}  # fmt: skip
    return {"name": name}


def spec_dict(data: Path, model: str, setting: str, steps: int, max_length: int, uri: str):
    packing = {
        "padded": {},
        "packed": {"padding_free": True},
        "packed_one": {"padding_free": True, "padding_free_tokens": BATCH * max_length},
    }[setting]
    return {
        "model": model_section(model),
        "data": {"source": str(data), "eval_size": 8},
        "method": "sft",
        "adapter": {"name": "lora"},
        "objectives": [{"name": "heldout_nll", "direction": "min", "source": "term:completion"}],
        "train": {"steps": steps, "batch_size": BATCH, "max_length": max_length,
                  "eval_every": steps, "accelerator": "cpu", "seed": 0, **packing},
        "eval": {"batch_size": BATCH, "samples_logged": 0, "max_new_tokens": 1},
        "tracking": {"uri": uri, "experiment": "padding-free", "log_model": False},
    }  # fmt: skip


def child(data: Path, model: str, setting: str, steps: int, max_length: int) -> dict:
    """One run in this process: its pad fraction, tokens/s and peak memory."""
    import workbench
    from workbench.methods.base import WorkbenchModule
    from workbench.running.events import RunObserver

    fed = {"tokens": 0, "positions": 0}
    plain_layout = WorkbenchModule.rows_layout

    def counted_layout(self, batch):  # what the model is fed in training passes
        layout = plain_layout(self, batch)
        if self.split == "train":
            fed["tokens"] += int(batch["attention_mask"].sum())
            fed["positions"] += layout.input_ids.numel()
        return layout

    WorkbenchModule.rows_layout = counted_layout
    marks, seen = StepMarks(), {"peak_mb": None}

    class Watch(RunObserver):
        def on_step(self, step, metrics):
            marks.note(step, round(metrics["perf/tokens_per_s"] * metrics["perf/step_s"]))

        def on_costs(self, step, costs):
            if "perf/peak_mem_mb" in costs:
                seen["peak_mb"] = costs["perf/peak_mem_mb"]

    with tempfile.TemporaryDirectory(prefix="padding-free-store-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        spec = spec_dict(data, model, setting, steps, max_length, uri)
        result = workbench.run(spec, log=lambda *a: None, observers=[Watch()])
    timed = throughput(marks, min(WARMUP, steps - 1), steps)
    return {
        "status": result.status,
        "pad_fraction": 1 - fed["tokens"] / max(fed["positions"], 1),
        "tokens_per_s": timed["tokens_per_s"],
        "tokens_per_cpu_s": timed["tokens_per_cpu_s"],
        "peak_mb": seen["peak_mb"],
        "heldout_nll": result.objectives.get("heldout_nll"),
    }


def run_child(args: list[str], threads: int, cache: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    if "WORKBENCH_CACHE" not in os.environ:  # the tiny base's first build, shared by the runs
        env["WORKBENCH_CACHE"] = str(cache)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                         capture_output=True, text=True, env=env)  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"the run {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if result["status"] != "FINISHED":
        raise RuntimeError(f"the run {args} ended {result['status']}")
    return result


def default_model() -> str:
    from workbench.models.bases import BUILTIN_BASES

    return REAL_MODEL if BUILTIN_BASES[REAL_MODEL].installed() else "tiny"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny random base, 3 steps, 1 repeat (a smoke test)")  # fmt: skip
    parser.add_argument("--model", default=None,
                        help=f"a base (default {REAL_MODEL} if installed, else tiny)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="runs a setting (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="steps a run (default 10)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens a row at most (default 256)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads a run (default 1: steadier when shared)")  # fmt: skip
    add_jobs_argument(parser)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model = "quick" if args.quick else (args.model or default_model())
    steps = args.steps or (3 if args.quick else 10)
    max_length = args.max_length or (96 if args.quick else 256)
    if args.child:
        result = child(Path(args.data), model, args.child, steps, max_length)
        print("RESULT " + json.dumps(result))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)

    print("LoRA SFT on chat rows of mixed length: padding-free batches against padded ones")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; python "
          f"{platform.python_version()}, {versions()}")  # fmt: skip
    print(f"command: python benchmarks/padding_free.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"model {model}; batch {BATCH}, max_length {max_length}, {steps} steps a run, "
          f"{repeats} repeat(s), {args.threads} torch thread(s)")  # fmt: skip
    if args.jobs > 1:
        print(side_by_side_note(args.jobs))
    print(f"load average at start: {load_average()}")
    results: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="padding-free-") as tmp:
        data = Path(tmp) / "chat.jsonl"
        write_rows(data, ROWS, most_words=10 if args.quick else 100)

        def run_setting(setting):
            command = ["--child", setting, "--data", str(data), "--steps", str(steps),
                       "--max-length", str(max_length), "--model", model]  # fmt: skip
            if args.quick:
                command.append("--quick")
            return run_child(command, args.threads, Path(tmp))

        try:
            for repeat in range(repeats):
                run_repeat(run_setting, list(SETTINGS), repeat, results, args.jobs)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(f"{time.perf_counter() - started:.0f} s; load average at end: {load_average()}")
    print()
    header = (f"{'setting':<11} {'pad fraction':>12} {'tokens/s (min-max)':>22} "
              f"{'tokens/CPU-s':>12} {'train peak MiB (min-max)':>26} "
              f"{'held-out nll':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for setting, rows in results.items():
        peaks = [r["peak_mb"] for r in rows if r["peak_mb"] is not None]
        print(f"{setting:<11} {statistics.median(r['pad_fraction'] for r in rows):>12.3f} "
              f"{spread([r['tokens_per_s'] for r in rows], 0):>22} "
              f"{statistics.median(r['tokens_per_cpu_s'] for r in rows):>12.0f} "
              f"{spread(peaks, 1) if peaks else '-':>26} "
              f"{rows[0]['heldout_nll']:>12.5f}")  # fmt: skip

    def ratio(setting: str, key: str) -> float:
        pairs = zip(results[setting], results["padded"])
        return statistics.median(r[key] / p[key] for r, p in pairs)

    print()
    print(f"packed_one over padded: tokens/s x{ratio('packed_one', 'tokens_per_s'):.3f}")
    print(f"packed over padded: tokens/CPU-s x{ratio('packed', 'tokens_per_cpu_s'):.3f}")
    print(f"BENCH padding_free_tokens_per_s_ratio {ratio('packed', 'tokens_per_s'):.3f} x "
          "target=>1")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
