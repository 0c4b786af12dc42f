"""The workbench's SFT, DPO and GRPO against TRL's SFTTrainer, DPOTrainer and GRPOTrainer on
CPU: tokens per second and peak memory, per method and precision.

    python benchmarks/vs_trl.py                  # the 135m shape: SFT, DPO, GRPO, float32 and
                                                 # bf16, 5 repeats (hours on 2 idle cores)
    python benchmarks/vs_trl.py --only sft --precision bf16     # one method, one precision
    python benchmarks/vs_trl.py --shape fewshot-30m             # the earlier comparison
    python benchmarks/vs_trl.py --quick          # a tiny model, few steps, one repeat: a CI
                                                 # smoke test (its figures mean little)

Shapes (``vs_trl_setup``). ``135m`` (the default): SmolLM2-135M's Llama configuration (hidden
576, 30 layers, 9 heads, 3 KV heads, intermediate 1536, tied embeddings) with random weights
and a 49,152-entry word-level vocabulary (one word, one token), about 134.5M parameters;
chat-shaped rows: a prompt and a reply of Zipf-distributed words, each row's length drawn
log-normal (median 55% of the longest allowed, at least 15%), the prompt 30-60% of each row
(the share measured over the rows is printed). Per step: SFT 8 rows of up to 256 tokens;
DPO 8 pairs of up to 256 tokens each side; GRPO 2 prompts x 4 completions of exactly 64
tokens, prompts 27-96 tokens. ``fewshot-30m`` (kept for reference, float32 only, its old
rows): DPO and GRPO on a 30M-parameter Llama with a 32,000-entry vocabulary, the DPO prompts
padded with few-shot examples until 91% of the tokens are prompt (the shape that most rewards
skipping prompt positions), GRPO on the built-in ``order`` prompts.

Each side at equal configuration and at its best on a CPU (``vs_trl_sft``, ``vs_trl_dpo``,
``vs_trl_grpo`` give the details): the same model folder, data file, rows, batch, steps,
learning rate (SFT 1e-4 with LoRA, DPO and GRPO 1e-6 with full fine-tuning), constant
schedule, clipping 1.0, AdamW without weight decay; the same precision on both sides (``fp32``:
float32; ``bf16``: bf16 autocast over float32 weights, the workbench's ``train.precision:
bf16-mixed`` against TRL's ``bf16=True``); gradient checkpointing off on both. The workbench:
``kernels: auto`` and ``train.padding_free`` where its spec offers it (``--padding-free off``
leaves it out). TRL: SFT with its ``padding_free`` (row ``trl``) and padded (``trl-padded``),
the headline taking the faster of the two; DPO with ``precompute_ref_log_probs`` (and
``padding_free`` asked for, which TRL 1.16 switches off again); GRPO sampling with
transformers' ``generate`` (no vLLM, which needs a GPU). TRL's chunked log-prob heads run as
shipped; Liger's kernels (TRL's ``use_liger_kernel``) need a GPU and are not in these CPU rows.
Both sides' children run with torch's transparent huge pages for its large CPU blocks
(``THP_MEM_ALLOC_ENABLE=1``, which a workbench process sets for itself and any torch program
can be given; ``--huge-pages off`` runs both without). ``--workbench-spec JSON`` changes the
workbench's spec (e.g. ``'{"train": {"reuse_freed_memory": false}}'``); its rows then say so.
``--variant-spec JSON`` adds a second workbench row (``wb-variant``) with those changes.

The allocator: the workbench row runs on mimalloc, as every workbench training process does
where it is installed (``workbench.running.allocator``; ``--workbench-allocator system`` for
the C library's malloc). TRL's rows run on the system allocator, as TRL runs when nobody
changes it, and its best configuration runs again on mimalloc (``trl-mimalloc``), since a TRL
user can preload it too. The headline ratios are against TRL's fastest row, whichever
allocator it ran on; ``BENCH ..._vs_trl_system_malloc`` lines give the ratios against TRL on
the system allocator, each side as it runs out of the box.

Measured per run, each in a child process of its own: tokens/s, the non-pad tokens of the timed
steps (after the warm-up) over their wall time (DPO: plus the timed rows' share of the
reference precomputation; GRPO: completion tokens counted twice, generated once and trained
once); peak memory, the child's lifetime high-water resident memory, read by this process from
the kernel when it reaps the child (``child_peak_memory``), minus the child's resident memory
right after its imports and model load, its weights read once so that they are resident (a
safetensors load maps them and leaves them on disk until read): the same reading on both sides
(the workbench child keeps its run from resetting the high-water mark). ``--repeats`` runs per
row (default 5), the rows of a repeat back to back in an order that rotates between repeats.
The table gives each row's median and spread (min-max) over its repeats; the ratios to TRL are
the median (and spread) of each repeat's ratio, both rows of a repeat having run side by side.
Children run with ``--threads`` intra-op threads (default 1: on a shared 2-core machine a
two-threaded step waits on preempted threads; on idle cores ``--threads 2`` is the user's
case). The table comes first; the last lines are the headline figures, ``BENCH <figure> <value>
<unit> target=<target>``, one pair per method and precision (the bf16 ones end in ``_bf16``,
the ``fewshot-30m`` ones in ``_fewshot30m``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from child_jobs import add_jobs_argument, run_repeat, side_by_side_note
from child_peak_memory import run_child_process
from machine_load import load_average

METHODS = ("sft", "dpo", "grpo")
PRECISIONS = ("fp32", "bf16")
SMOLLM2_135M = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
}
QUICK_WORD_MODEL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 192,
    "vocab_size": 512,
}
MAX_POSITIONS = 8192  # SmolLM2-135M's
# fewshot-30m: (hidden, layers, heads), about 30M parameters with the 32k vocabulary (16.4M
# of them the tied embedding); the quick run's model is a fraction of that.
FEWSHOT_MODEL = {"hidden": 512, "layers": 4, "heads": 8}
FEWSHOT_QUICK_MODEL = {"hidden": 64, "layers": 1, "heads": 4}
SIZES = {
    "135m": {
        "sft": {"steps": 8, "warmup": 2, "batch": 8, "seq": 256, "repeats": 5},
        "dpo": {"steps": 4, "warmup": 1, "batch": 8, "seq": 256, "repeats": 5},
        "grpo": {"steps": 4, "warmup": 1, "batch": 2, "group": 4, "completion": 64, "repeats": 5},
    },
    "135m-quick": {
        "sft": {"steps": 2, "warmup": 1, "batch": 4, "seq": 48, "repeats": 1},
        "dpo": {"steps": 2, "warmup": 1, "batch": 2, "seq": 48, "repeats": 1},
        "grpo": {"steps": 1, "warmup": 1, "batch": 2, "group": 2, "completion": 8, "repeats": 1},
    },
    "fewshot-30m": {
        "dpo": {"steps": 6, "warmup": 1, "batch": 4, "seq": 128, "repeats": 3},
        "grpo": {"steps": 4, "warmup": 1, "batch": 4, "group": 4, "completion": 32, "repeats": 3},
    },
    "fewshot-30m-quick": {
        "dpo": {"steps": 2, "warmup": 1, "batch": 2, "seq": 64, "repeats": 1},
        "grpo": {"steps": 1, "warmup": 1, "batch": 2, "group": 2, "completion": 4, "repeats": 1},
    },
}
LR = {"sft": 1e-4, "dpo": 1e-6, "grpo": 1e-6}
BETA = 0.1
HELD_OUT = 8  # the workbench's held-out rows (its objective at the end)
HELD_OUT_PROMPTS = 2
# Rows per method: (name, child side, settings); a row named in BASELINES is TRL's.
# The workbench row runs on the allocator a workbench training process gets (mimalloc where
# installed: workbench.running.allocator; --workbench-allocator); TRL's rows on the system
# allocator as TRL users run it, and its best configuration again on mimalloc (`-mimalloc`),
# since that is one environment variable away for a TRL user too.
ROWS = {
    "sft": (
        ("workbench", "sft-workbench", {}),
        ("trl", "sft-trl", {"trl_padding_free": True, "allocator": "system"}),
        ("trl-mimalloc", "sft-trl", {"trl_padding_free": True, "allocator": "mimalloc"}),
        ("trl-padded", "sft-trl", {"trl_padding_free": False, "allocator": "system"}),
    ),
    "dpo": (
        ("workbench", "dpo-workbench", {}),
        ("trl", "dpo-trl", {"trl_defaults": False, "allocator": "system"}),
        ("trl-mimalloc", "dpo-trl", {"trl_defaults": False, "allocator": "mimalloc"}),
    ),
    "grpo": (
        ("workbench", "grpo-workbench", {}),
        ("trl", "grpo-trl", {"allocator": "system"}),
        ("trl-mimalloc", "grpo-trl", {"allocator": "mimalloc"}),
    ),
}
# The earlier comparison's DPO rows add TRL's defaults (its precision, gradient checkpointing
# on, a reference model run at every step).
FEWSHOT_DPO_ROWS = (*ROWS["dpo"], ("trl-defaults", "dpo-trl", {"trl_defaults": True}))
BASELINES = {
    "sft": ("trl", "trl-mimalloc", "trl-padded"),
    "dpo": ("trl", "trl-mimalloc"),
    "grpo": ("trl", "trl-mimalloc"),
}
# TRL's row as TRL runs when nobody changes its allocator (the "as shipped" BENCH lines).
SYSTEM_MALLOC_BASELINE = "trl"
# (tokens/s ratio, peak memory ratio) targets: the workbench against TRL's best.
TARGETS = {"sft": (">=2", "<=0.5"), "dpo": (">=1.5", "<=0.6"), "grpo": (">=1.2", "<=0.8")}
FEWSHOT_TARGETS = {"dpo": (">=1.1", "<=0.6"), "grpo": (">=1.1", "<=0.8")}
GRPO_REWARD = {"135m": "even_words", "fewshot-30m": "length"}


# ---------------------------------------------------------------------------------------
# children: the data, then one run each


def build_word_level(job: dict) -> dict:
    """Child: the 135m-shaped model folder and the chat-shaped data of the methods to run."""
    from train_options import build_word_level_model
    from transformers import AutoConfig
    from vs_trl_setup import chat_pairs, chat_prompts, chat_rows, write_pairs

    folder = Path(job["folder"])
    words, weights = build_word_level_model(folder / "model", job["model_shape"], MAX_POSITIONS)
    config = AutoConfig.from_pretrained(folder / "model")
    built = {"params": parameter_count(config), "vocab": config.vocab_size}
    sizes = job["sizes"]
    if "sft" in sizes:
        s = sizes["sft"]
        rows = chat_rows(
            words, weights, (s["warmup"] + s["steps"]) * s["batch"] + HELD_OUT, s["seq"]
        )
        write_pairs(folder / "sft.jsonl", rows)
        built["sft"] = shares(rows, [("prompt", "completion")])
    if "dpo" in sizes:
        s = sizes["dpo"]
        pairs = chat_pairs(
            words, weights, (s["warmup"] + s["steps"]) * s["batch"] + HELD_OUT, s["seq"], seed=1
        )
        write_pairs(folder / "pairs.jsonl", pairs)
        built["dpo"] = shares(pairs, [("prompt", "chosen"), ("prompt", "rejected")])
    if "grpo" in sizes:
        s = sizes["grpo"]
        n = (s["warmup"] + s["steps"]) * s["batch"] + HELD_OUT_PROMPTS
        prompts = chat_prompts(words, weights, n, s["completion"], seed=2)
        write_pairs(folder / "prompts.jsonl", prompts)
        built["grpo"] = shares(prompts, [("prompt", "completion")])
    return built


def shares(records: list[dict], parts: list[tuple[str, str]]) -> dict:
    """Rows, mean tokens per sequence and the prompt's share of all tokens (a word is a token;
    the end token the libraries append is left out), over every (prompt, reply) of ``parts``."""
    prompt = reply = sequences = 0
    for record in records:
        for first, second in parts:
            prompt += len(record[first].split())
            reply += len(record[second].split())
            sequences += 1
    return {
        "rows": len(records),
        "mean_tokens": (prompt + reply) / sequences,
        "prompt_share": prompt / (prompt + reply),
    }


def parameter_count(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_fewshot(job: dict) -> dict:
    """Child: the fewshot-30m model folder and its data (the earlier comparison's)."""
    from transformers import AutoTokenizer
    from vs_trl_setup import VOCAB, build_model_folder, few_shot_pairs, task_prompts, write_pairs

    folder = Path(job["folder"])
    dpo, grpo = job["sizes"]["dpo"], job["sizes"]["grpo"]
    params = build_model_folder(folder / "model", seq=dpo["seq"], **job["model_shape"])
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    n_pairs = (dpo["warmup"] + dpo["steps"]) * dpo["batch"] + HELD_OUT
    records = few_shot_pairs(tokenizer, n_pairs, dpo["seq"])
    write_pairs(folder / "pairs.jsonl", records)
    prompt = [len(tokenizer(r["prompt"])["input_ids"]) for r in records]
    chosen = [len(tokenizer(r["chosen"])["input_ids"]) for r in records]
    prompts = task_prompts((grpo["warmup"] + grpo["steps"]) * grpo["batch"] + HELD_OUT_PROMPTS)
    write_pairs(folder / "prompts.jsonl", prompts)
    prompt_tokens = sum(len(tokenizer(r["prompt"])["input_ids"]) for r in prompts)
    grpo_share = prompt_tokens / (prompt_tokens + len(prompts) * grpo["completion"])
    return {
        "params": params,
        "vocab": VOCAB,
        "dpo": {
            "rows": n_pairs,
            "mean_tokens": statistics.mean(map(sum, zip(prompt, chosen))),
            "prompt_share": sum(prompt) / (sum(prompt) + sum(chosen)),
        },
        "grpo": {
            "rows": len(prompts),
            "mean_tokens": prompt_tokens / len(prompts),
            "prompt_share": grpo_share,
        },
    }


def child(side: str, job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    if side == "build":
        return (build_fewshot if job["shape"] == "fewshot-30m" else build_word_level)(job)
    method, who = side.split("-")
    return getattr(importlib.import_module(f"vs_trl_{method}"), f"run_{who}")(job)


def child_environment(job: dict) -> dict[str, str]:
    """The environment of a benchmark child: offline, quiet, ``job``'s threads, huge pages and
    allocator (``mimalloc``: preloaded as the workbench preloads its training processes;
    ``system``: the C library's)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TQDM_DISABLE="1",
        OMP_NUM_THREADS=str(job["threads"]),
        HF_DATASETS_CACHE=str(Path(job["folder"]) / "datasets"),
        # torch's transparent huge pages for its large CPU blocks, read once by torch at its
        # first such allocation: set (or not) alike for both sides' children.
        THP_MEM_ALLOC_ENABLE="1" if job["huge_pages"] else "0",
    )
    # Here, not at the top: a TRL child imports this file and nothing of workbench.
    from workbench.running import allocator

    env[allocator.ALLOCATOR_ENV] = job.get("allocator", "system")
    # On mimalloc, both sides alike: freed memory kept for reuse from the process's start, as
    # the workbench starts its training processes (mimalloc's own default gives it back after
    # 10 ms, and every step then faults its pages in again: TRL's SFT 103 tokens/s, not 133).
    return allocator.preload_environment(env)


def run_child(side: str, job: dict) -> dict:
    """One child process; its result with its peak memory above its baseline (``peak_mb``)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", side, "--job", json.dumps(job)]
    run = run_child_process(command, child_environment(job))
    if run.returncode != 0:
        raise RuntimeError(f"child {side} failed:\n{run.stderr[-4000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "note" in result:
        result["note"] += f", {job.get('allocator', 'system')} malloc"
    if "baseline_mb" in result:
        result["process_peak_mb"] = run.peak_rss_mb
        result["peak_mb"] = run.peak_rss_mb - result["baseline_mb"]
    return result


# ---------------------------------------------------------------------------------------
# measuring and printing


def measure(job: dict, rows, repeats: int) -> dict[str, list[dict]]:
    """{row name: one result per repeat}; a repeat's rows back to back, the order rotating
    (``job["jobs"]`` of them side by side: smoke runs only, ``child_jobs``)."""
    results: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
    by_name = {name: (side, settings) for name, side, settings in rows}
    for repeat in range(repeats):

        def run_row(name, repeat=repeat):
            side, settings = by_name[name]
            started = time.perf_counter()
            result = run_child(side, {**job, **settings})
            # A full run takes hours on a CPU: each child's figures as it ends, on stderr so
            # that the table on stdout stays as it is.
            print(
                f"  repeat {repeat + 1}/{repeats} {name}: {result['tokens_per_s']:.1f} tokens/s, "
                f"peak {result.get('peak_mb', float('nan')):.0f} MB "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            return result

        run_repeat(run_row, list(by_name), repeat, results, job.get("jobs", 1))
    return results


def spread(values: list[float], digits: int) -> str:
    """The median and, in brackets, the least and the most of ``values``."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def paired_ratios(ours: list[dict], theirs: list[dict], key: str) -> list[float]:
    """Each repeat's ratio of ``key``: the two rows of a repeat ran side by side."""
    return [a[key] / b[key] for a, b in zip(ours, theirs)]


def best_baseline(results: dict[str, list[dict]], method: str) -> str:
    """TRL's row with the higher median tokens/s (its best configuration here)."""
    return max(
        (name for name in BASELINES[method] if name in results),
        key=lambda name: statistics.median(r["tokens_per_s"] for r in results[name]),
    )


def print_table(results: dict[str, list[dict]], baseline: str, phase: tuple[str, str]) -> None:
    """Every row's medians and spreads; ``phase``: a timed part's figure and column title."""
    header = (
        f"{'row':<11} {'tokens/s (min-max)':>22} {'tok/cpu-s':>9} {'timed s':>8} "
        f"{phase[1]:>9} {'tokens':>7} {'peak MiB (min-max)':>24} {'base MiB':>8} "
        f"{'speed/trl (min-max)':>21} {'mem/trl (min-max)':>19}  configuration"
    )
    print(header)
    print("-" * (len(header) + 40))
    for name, rs in results.items():
        med = {
            k: statistics.median(r.get(k, 0.0) for r in rs)
            for k in ("tokens_per_cpu_s", "wall_s", phase[0], "tokens", "baseline_mb")
        }
        print(
            f"{name:<11} {spread([r['tokens_per_s'] for r in rs], 1):>22} "
            f"{med['tokens_per_cpu_s']:>9.1f} {med['wall_s']:>8.2f} {med[phase[0]]:>9.2f} "
            f"{med['tokens']:>7.0f} {spread([r['peak_mb'] for r in rs], 1):>24} "
            f"{med['baseline_mb']:>8.1f} "
            f"{spread(paired_ratios(rs, results[baseline], 'tokens_per_s'), 3):>21} "
            f"{spread(paired_ratios(rs, results[baseline], 'peak_mb'), 3):>19}  "
            f"{rs[0]['note']}"
        )
    print(
        "repeats (tokens/s | peak MiB): "
        + "; ".join(
            f"{name} " + ", ".join(f"{r['tokens_per_s']:.0f}|{r['peak_mb']:.0f}" for r in rs)
            for name, rs in results.items()
        )
    )


DESCRIBE = {
    "sft": lambda s: f"LoRA SFT, {s['batch']} rows of up to {s['seq']} tokens per step",
    "dpo": lambda s: (
        f"DPO, full fine-tuning, {s['batch']} pairs of up to {s['seq']} tokens per side per step"
    ),
    "grpo": lambda s: (
        f"GRPO, full fine-tuning, {s['batch']} prompts x {s['group']} "
        f"completions of exactly {s['completion']} tokens per step"
    ),
}
TRAINER = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "grpo": "GRPOTrainer"}
PHASE = {
    "sft": ("train_wall_s", "train s"),
    "dpo": ("reference_wall_s", "of it ref"),
    "grpo": ("generation_wall_s", "of it gen"),
}


def compare(method: str, precision: str, job: dict, data: dict, suffix: str) -> list[str]:
    """One method at one precision: its table; returns its BENCH lines."""
    sizes = dict(job["sizes"][method])
    repeats = sizes.pop("repeats")
    folder = Path(job["folder"])
    held_out = HELD_OUT_PROMPTS if method == "grpo" else HELD_OUT
    run_job = {
        **job,
        **sizes,
        "method": method,
        "precision": precision,
        "lr": LR[method],
        "eval_fraction": held_out / data["rows"],
    }
    run_job["data" if method != "grpo" else "prompts_data"] = str(
        folder / {"sft": "sft.jsonl", "dpo": "pairs.jsonl", "grpo": "prompts.jsonl"}[method]
    )
    rows = FEWSHOT_DPO_ROWS if (job["shape"], method) == ("fewshot-30m", "dpo") else ROWS[method]
    if job.get("rows"):
        rows = tuple(row for row in rows if row[0] in job["rows"])
    if job.get("variant_spec"):
        # A second workbench row with --variant-spec's changes over --workbench-spec's.
        variant = {**job["workbench_spec"], **job["variant_spec"]}
        rows = (*rows[:1], ("wb-variant", f"{method}-workbench", {"workbench_spec": variant}),
                *rows[1:])  # fmt: skip
    print(f"\n{method.upper()} {precision}: the workbench against TRL's {TRAINER[method]}")
    print(
        f"{DESCRIBE[method](sizes)}; {sizes['warmup']} warm-up + {sizes['steps']} timed "
        f"steps; {data['rows']} rows, {data['mean_tokens']:.1f} tokens per "
        f"{'prompt' if method == 'grpo' else 'sequence'} on average, the prompt "
        f"{100 * data['prompt_share']:.0f}% of the tokens; repeats: {repeats}"
    )
    started = time.perf_counter()
    results = measure(run_job, rows, repeats)
    baseline = best_baseline(results, method)
    candidates = [name for name in BASELINES[method] if name in results]
    chosen = f", the faster of {' and '.join(candidates)}" if len(candidates) > 1 else ""
    print(f"({time.perf_counter() - started:.0f} s; ratios against TRL's row '{baseline}'{chosen})")
    print()
    print_table(results, baseline, PHASE[method])
    targets = (FEWSHOT_TARGETS if job["shape"] == "fewshot-30m" else TARGETS)[method]
    lines = []
    for figure, key, target in (
        ("tokens_per_s_ratio", "tokens_per_s", targets[0]),
        ("peak_mem_ratio", "peak_mb", targets[1]),
    ):
        value = statistics.median(paired_ratios(results["workbench"], results[baseline], key))
        lines.append(f"BENCH {method}_{figure}_vs_trl{suffix} {value:.3f} x target={target}")
    if baseline != SYSTEM_MALLOC_BASELINE and SYSTEM_MALLOC_BASELINE in results:
        # Each side as its users get it: the workbench on its allocator, TRL on the system's.
        for figure, key, target in (
            ("tokens_per_s_ratio", "tokens_per_s", targets[0]),
            ("peak_mem_ratio", "peak_mb", targets[1]),
        ):
            value = statistics.median(
                paired_ratios(results["workbench"], results[SYSTEM_MALLOC_BASELINE], key)
            )
            lines.append(
                f"BENCH {method}_{figure}_vs_trl_system_malloc{suffix} {value:.3f} x "
                f"target={target}"
            )
    return lines


def versions() -> dict:
    from importlib import metadata

    info = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "lightning", "peft", "mlflow"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model, few steps, one repeat (CI)"
    )
    parser.add_argument(
        "--shape",
        choices=("135m", "fewshot-30m"),
        default="135m",
        help="135m (default): SmolLM2-135M's shape, chat-shaped rows; "
        "fewshot-30m: the earlier DPO and GRPO comparison",
    )
    parser.add_argument(
        "--only", help="comma-separated methods of sft, dpo, grpo (default: all the shape has)"
    )
    parser.add_argument(
        "--precision",
        help="comma-separated precisions of fp32, bf16 (default: both; fewshot-30m: fp32)",
    )
    for name, text in (
        ("steps", "timed steps"),
        ("warmup", "untimed steps first"),
        ("batch", "rows, pairs or (GRPO) prompts per step"),
        ("seq", "SFT, DPO: tokens per sequence at most"),
        ("group", "GRPO: completions per prompt"),
        ("completion", "GRPO: tokens of every completion"),
        ("repeats", "runs per row (default 5; fewshot-30m 3; quick 1)"),
    ):
        parser.add_argument(f"--{name}", type=int, help=f"{text} (applies to every method run)")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads per child (default 1)"
    )
    parser.add_argument(
        "--padding-free",
        choices=("on", "off"),
        default="on",
        help="the workbench's train.padding_free where its spec offers it (135m shape; default on)",
    )
    parser.add_argument(
        "--huge-pages",
        choices=("on", "off"),
        default="on",
        help="THP_MEM_ALLOC_ENABLE in every child's environment, both sides (default on: what "
        "a workbench process sets for itself; off: torch's default)",
    )
    parser.add_argument(
        "--workbench-spec",
        type=json.loads,
        default={},
        help="JSON merged into every workbench spec, section by section, e.g. "
        '\'{"train": {"reuse_freed_memory": true}}\' (the rows then say so)',
    )
    parser.add_argument(
        "--rows",
        help="comma-separated rows to run of workbench, trl, trl-mimalloc, trl-padded, "
        "wb-variant (default: all; workbench and one TRL row at least)",
    )
    parser.add_argument(
        "--variant-spec",
        type=json.loads,
        default={},
        help="JSON for a second workbench row, 'wb-variant', merged over --workbench-spec, e.g. "
        '\'{"kernels": "torch"}\' (the headline stays the first workbench row\'s)',
    )
    parser.add_argument(
        "--workbench-allocator",
        choices=("mimalloc", "system"),
        default="mimalloc",
        help="the workbench row's malloc (default mimalloc: what a workbench training process "
        "runs on; system: the C library's, as before 2026-12-08)",
    )
    add_jobs_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.job))))
        return 0

    if args.rows:
        wanted_rows = args.rows.split(",")
        known = {name for rows in ROWS.values() for name, _, _ in rows} | {"wb-variant"}
        if (
            set(wanted_rows) - known
            or "workbench" not in wanted_rows
            or not any(name.startswith("trl") for name in wanted_rows)
        ):
            parser.error(f"--rows {args.rows}: workbench, one TRL row at least, of {sorted(known)}")
    shape_sizes = SIZES[args.shape + ("-quick" if args.quick else "")]
    methods = args.only.split(",") if args.only else list(shape_sizes)
    precisions = (
        args.precision.split(",")
        if args.precision
        else ["fp32"]
        if args.shape == "fewshot-30m"
        else list(PRECISIONS)
    )
    for value, allowed, flag in (
        (methods, shape_sizes, "--only"),
        (precisions, PRECISIONS, "--precision"),
    ):
        wrong = [v for v in value if v not in allowed]
        if wrong:
            parser.error(
                f"{flag} {','.join(wrong)}: allowed {', '.join(allowed)} (shape {args.shape})"
            )
    sizes = {
        m: {
            k: (getattr(args, k) if getattr(args, k) is not None else v)
            for k, v in shape_sizes[m].items()
        }
        for m in methods
    }
    if args.shape == "fewshot-30m":
        model_shape = FEWSHOT_QUICK_MODEL if args.quick else FEWSHOT_MODEL
        sizes = {**{m: shape_sizes[m] for m in ("dpo", "grpo")}, **sizes}  # the build needs both
    else:
        model_shape = QUICK_WORD_MODEL if args.quick else SMOLLM2_135M

    # Here, not at the top: a TRL child imports this file and nothing of workbench.
    from workbench.running.heap import kernel_huge_pages_mode

    print("The workbench against TRL, CPU")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    print(f"command: python benchmarks/vs_trl.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {load_average()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        job = {
            "shape": args.shape,
            "sizes": sizes,
            "folder": tmp,
            "threads": args.threads,
            "beta": BETA,
            "model": str(Path(tmp) / "model"),
            "model_shape": model_shape,
            "padding_free": args.padding_free == "on" and args.shape == "135m",
            "reward": GRPO_REWARD[args.shape],
            "workbench_spec": args.workbench_spec,
            "variant_spec": args.variant_spec,
            "rows": args.rows.split(",") if args.rows else None,
            "huge_pages": args.huge_pages == "on",
            # The workbench rows' allocator; TRL's rows name their own.
            "allocator": args.workbench_allocator,
            "jobs": args.jobs,
        }
        built = run_child("build", job)
        side_by_side = side_by_side_note(args.jobs)
        print(
            f"shape {args.shape}{' (quick)' if args.quick else ''}: Llama {model_shape}, "
            f"vocabulary {built['vocab']}, {built['params'] / 1e6:.1f}M parameters; "
            f"intra-op threads: {args.threads}; torch's huge pages (THP_MEM_ALLOC_ENABLE): "
            f"{args.huge_pages}, both sides; the kernel's transparent_hugepage: "
            f"{kernel_huge_pages_mode() or 'unknown'}" + side_by_side
        )
        bench = []
        for method in methods:
            for precision in precisions:
                suffix = ("" if precision == "fp32" else f"_{precision}") + (
                    "_fewshot30m" if args.shape == "fewshot-30m" else ""
                )
                bench += compare(method, precision, job, built[method], suffix)
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average at end: {load_average()}")
    print()
    print("\n".join(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
