"""Memory and speed of the train options: gradient checkpointing, bf16-mixed and compile,
each against a float32 baseline.

    python benchmarks/train_options.py                 # --shape small, 3 repeats (minutes)
    python benchmarks/train_options.py --shape 135m    # SmolLM2-135M's shape (long on a CPU)
    python benchmarks/train_options.py --quick         # a tiny shape, 2 steps, 1 repeat: a
                                                       # smoke test (its figures mean little)

LoRA SFT (``workbench.run``, the default adapter settings, ``kernels: auto``; ``--adapter full``
for full fine-tuning) on a Llama-shaped
model with random weights and a word-level tokenizer built locally (no hub), batch 8 x 128
tokens: every row is cut to exactly 128 tokens, so every batch has the same shape and a
compiled step compiles once. Shapes: ``small`` (hidden 256, 4 layers, 4 heads, intermediate
768, vocabulary 8000) and ``135m`` (SmolLM2-135M's: hidden 576, 30 layers, 9 heads, 3 KV
heads, intermediate 1536, vocabulary 49152). Settings: ``baseline`` (32-true, the
defaults), ``grad_ckpt`` (``train.gradient_checkpointing``), ``bf16`` (``train.precision:
bf16-mixed``), ``compile`` (``train.compile``) and ``no_reuse`` (``train.reuse_freed_memory:
false``: blocks of 1 MiB and more handed back to the system when freed; before 2026-12-07 it
left glibc to its own behaviour, which keeps them after the first) and ``foreach_adam``
(``optimizer.fused: false``: torch's multi-tensor AdamW instead of the fused one, the default
on CPU).

Each run is its own process, the settings alternating (the order rotates each repeat) so
that load from other processes hits every setting alike. Per run: the step time (median of
``perf/step_s`` over the steps after the first two, which hold the compilation), the peak
resident memory of training (``perf/peak_mem_mb``: the process's high-water mark minus the
one after the imports and the model load, as every run records it) and the whole process's
peak (``ru_maxrss`` since it started). The table gives each setting's median and the spread
(min-max) over its runs, and the ratios to the baseline (median over repeats of each
repeat's ratio); the last lines are the headline figures, ``BENCH <figure> <value> x
target=<target>``.
"""

from __future__ import annotations

import argparse
import functools
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

from child_jobs import add_jobs_argument, run_repeat, side_by_side_note
from machine_load import load_average
from run_figures import note_memory_after

SHAPES = {
    "quick": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 192, "vocab_size": 512},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 768, "vocab_size": 8000},
    "135m": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152},
}  # fmt: skip
# Each setting: the spec sections it changes against the defaults.
SETTINGS = {
    "baseline": {},
    "grad_ckpt": {"train": {"gradient_checkpointing": True}},
    "bf16": {"train": {"precision": "bf16-mixed"}},
    "compile": {"train": {"compile": True}},
    # The baseline keeps freed memory in the heap (train.reuse_freed_memory, the default);
    # this one hands every block of 1 MiB and more back to the system when it is freed.
    "no_reuse": {"train": {"reuse_freed_memory": False}},
    # The baseline's AdamW is fused (the default on CPU); this one is torch's multi-tensor
    # step. It matters with --adapter full, where every weight has its moments.
    "foreach_adam": {"optimizer": {"fused": False}},
}
# Headline figures: (name, setting, measure, target).
HEADLINES = (
    ("grad_ckpt_peak_mem_ratio", "grad_ckpt", "peak_mb", "<=0.7"),
    ("grad_ckpt_step_time_ratio", "grad_ckpt", "step_s", "<=1.4"),
    ("bf16_step_time_ratio", "bf16", "step_s", "<=1.0"),
    ("compile_step_time_ratio", "compile", "step_s", "<=0.9"),
    # Above 1: reusing freed memory (the baseline) is the faster.
    ("no_reuse_step_time_ratio", "no_reuse", "step_s", ">=1"),
    # Above 1: the fused AdamW (the baseline) is the faster and the leaner.
    ("foreach_adam_step_time_ratio", "foreach_adam", "step_s", ">=1"),
    ("foreach_adam_peak_mem_ratio", "foreach_adam", "peak_mb", ">=1"),
)
BATCH, LENGTH = 8, 128
ROWS = 256
WARMUP = 2


def build_word_level_model(
    folder: Path, shape: dict, max_positions: int = 2 * LENGTH
) -> tuple[list[str], list[float]]:
    """Save a random-weight Llama of ``shape`` (tied embeddings) and a word-level tokenizer of
    its vocabulary to ``folder``: every word of the vocabulary is one token, so a row of n
    words is n tokens. Returns the words and their Zipf weights (word k's share ~ 1/(k+1)), to
    draw rows from."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = [f"w{i}" for i in range(shape["vocab_size"] - len(specials))]
    table = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")  # fmt: skip
    config = LlamaConfig(**shape, max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return words, [1.0 / (rank + 1) for rank in range(len(words))]


def build_model(folder: Path, shape: dict) -> None:
    """A random-weight Llama of ``shape`` with a word-level tokenizer of its vocabulary, and a
    JSONL of prompt/completion rows longer than ``LENGTH`` tokens (Zipf-distributed words)."""
    words, weights = build_word_level_model(folder / "model", shape)
    rng = random.Random(0)
    with open(folder / "rows.jsonl", "w") as handle:
        for _ in range(ROWS):
            # 40 + 100 words: every row is truncated to LENGTH tokens.
            prompt, completion = (" ".join(rng.choices(words, weights, k=n)) for n in (40, 100))
            handle.write(json.dumps({"prompt": prompt, "completion": " " + completion}) + "\n")


def spec_dict(folder: Path, setting: str, steps: int, store: str, adapter: str = "lora") -> dict:
    changes = SETTINGS[setting]
    return {
        "model": {"name": str(folder / "model")},
        "data": {"source": str(folder / "rows.jsonl"), "eval_size": 8},
        "method": "sft",
        "adapter": {"name": adapter},
        "optimizer": {"name": "adamw", **changes.get("optimizer", {})},
        "objectives": [{"name": "heldout_nll", "direction": "min", "source": "term:completion"}],
        "train": {
            "steps": steps,
            "batch_size": BATCH,
            "max_length": LENGTH,
            "eval_every": steps,
            "accelerator": "cpu",
            **changes.get("train", {}),
        },
        "eval": {"batch_size": BATCH, "samples_logged": 0},
        "tracking": {"uri": store, "experiment": "train-options", "log_model": False},
    }


def child(folder: Path, setting: str, steps: int, adapter: str) -> dict:
    """One run in this process: its step times, peak memory and tags."""
    import workbench
    from workbench import tracking
    from workbench.running import pipeline, process_memory
    from workbench.running.events import RunObserver

    memory: dict = {}
    note_memory_after(pipeline, "load_base", memory)

    class NotedMark(process_memory.MemoryMark):
        """The run's mark of training memory resets the kernel's high-water mark (and with
        it ru_maxrss): the process's peak before it is noted first."""

        def __init__(self):
            memory["before_training_mb"] = process_memory.lifetime_peak_rss_mb()
            super().__init__()

    pipeline.MemoryMark = NotedMark
    seen: dict = {"step_s": {}, "peak_mb": None}

    class Watch(RunObserver):
        def on_step(self, step, metrics):
            seen["step_s"][step] = metrics["perf/step_s"]

        def on_costs(self, step, costs):
            if "perf/peak_mem_mb" in costs:
                seen["peak_mb"] = costs["perf/peak_mem_mb"]

    with tempfile.TemporaryDirectory(prefix="train-options-store-") as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        spec = spec_dict(folder, setting, steps, store, adapter)
        result = workbench.run(spec, log=lambda *a: None, observers=[Watch()])
        tags = tracking.connect(store).get_run(result.run_id).data.tags
    timed = [s for step, s in sorted(seen["step_s"].items()) if step > WARMUP]
    timed = timed or list(seen["step_s"].values())  # a --quick run has no steps after warm-up
    return {
        "status": result.status,
        "step_s": statistics.median(timed),
        "first_step_s": seen["step_s"].get(1),
        "peak_mb": seen["peak_mb"],
        "process_peak_mb": max(
            memory.get("before_training_mb", 0.0), process_memory.lifetime_peak_rss_mb()
        ),
        "load_mb": memory.get("baseline_mb"),
        "heldout_nll": result.objectives.get("heldout_nll"),
        "compile": tags.get("workbench.compile", "-"),
        "kernels": tags.get("workbench.kernels", "?"),
    }


def run_child(folder: Path, setting: str, steps: int, threads: int, adapter: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, os.path.abspath(__file__), "--child", setting, "--folder",
               str(folder), "--steps", str(steps), "--adapter", adapter]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"the {setting} run failed:\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if result["status"] != "FINISHED":
        raise RuntimeError(f"the {setting} run ended {result['status']}")
    return result


def ratio(results: dict, setting: str, key: str) -> float:
    """Median over repeats of the repeat's ``key`` ratio to the baseline's."""
    pairs = zip(results[setting], results["baseline"])
    return statistics.median(r[key] / b[key] if b[key] else float("nan") for r, b in pairs)


def spread(values: list[float], digits: int) -> str:
    """The median and, in brackets, the least and the most of ``values``."""
    median, low, high = (f"{v:.{digits}f}" for v in (statistics.median(values), *minmax(values)))
    return f"{median} ({low}-{high})"


def minmax(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def versions() -> str:
    from importlib import metadata

    names = ("torch", "transformers", "peft", "lightning")
    return ", ".join(f"{name} {metadata.version(name)}" for name in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("small", "135m"), default="small")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny shape, 2 steps, 1 repeat (a smoke test)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="runs per setting (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run (default 12; 135m: 6)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads a run (default 1: steadier when shared)")  # fmt: skip
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated settings (the baseline is always run)")  # fmt: skip
    parser.add_argument("--adapter", choices=("lora", "full"), default="lora",
                        help="lora (default) or full fine-tuning")  # fmt: skip
    add_jobs_argument(parser)
    parser.add_argument("--child", choices=tuple(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape_name = "quick" if args.quick else args.shape
    steps = args.steps or (2 if args.quick else 6 if shape_name == "135m" else 12)
    if args.child:
        print("RESULT " + json.dumps(child(Path(args.folder), args.child, steps, args.adapter)))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    settings = ["baseline", *(s for s in args.settings.split(",") if s in SETTINGS and
                              s != "baseline")]  # fmt: skip

    print(f"{'LoRA' if args.adapter == 'lora' else 'Full fine-tuning'} SFT: train options "
          "against a float32 baseline")  # fmt: skip
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; python "
          f"{platform.python_version()}, {versions()}")  # fmt: skip
    print(f"command: python benchmarks/train_options.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"shape {shape_name}: {SHAPES[shape_name]}; batch {BATCH} x {LENGTH} tokens, "
          f"{steps} steps a run, {repeats} repeat(s), {args.threads} torch thread(s)")  # fmt: skip
    if args.jobs > 1:
        print(side_by_side_note(args.jobs))
    print(f"load average at start: {load_average()}")
    results: dict[str, list[dict]] = {s: [] for s in settings}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-options-") as tmp:
        folder = Path(tmp)
        build_model(folder, SHAPES[shape_name])

        def run_setting(setting, repeat):
            result = run_child(folder, setting, steps, args.threads, args.adapter)
            # Progress on stderr: a run at the 135m shape takes minutes.
            print(f"repeat {repeat + 1}/{repeats} {setting}: {result['step_s']:.3f} s a step",
                  file=sys.stderr)  # fmt: skip
            return result

        try:
            for repeat in range(repeats):
                run = functools.partial(run_setting, repeat=repeat)
                run_repeat(run, settings, repeat, results, args.jobs)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    print(f"{time.perf_counter() - started:.0f} s; load average at end: {load_average()}")
    print()
    header = (f"{'setting':<12} {'s/step (min-max)':>24} {'train peak MiB (min-max)':>26} "
              f"{'process peak MiB':>17} {'time/base':>9} {'mem/base':>8} {'held-out nll':>12}"
              f" {'first step s':>12}  compile tag")  # fmt: skip
    print(header)
    print("-" * len(header))
    for setting, rows in results.items():
        process_peak = statistics.median(r["process_peak_mb"] for r in rows)
        first_step = statistics.median(r["first_step_s"] for r in rows)
        time_ratio, mem_ratio = (ratio(results, setting, k) for k in ("step_s", "peak_mb"))
        print(f"{setting:<12} {spread([r['step_s'] for r in rows], 4):>24} "
              f"{spread([r['peak_mb'] for r in rows], 1):>26} {process_peak:>17.0f} "
              f"{time_ratio:>9.3f} {mem_ratio:>8.3f} {rows[0]['heldout_nll']:>12.5f} "
              f"{first_step:>12.2f}  {rows[0]['compile']}")  # fmt: skip
    print(f"\nkernels: {results['baseline'][0]['kernels']}")
    print()
    for name, setting, key, target in HEADLINES:
        if setting in results:
            print(f"BENCH {name} {ratio(results, setting, key):.3f} x target={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
