"""The workbench's DPO and GRPO against TRL's DPOTrainer and GRPOTrainer on CPU: tokens per
second and peak memory.

    python benchmarks/vs_trl.py            # full run: DPO then GRPO
    python benchmarks/vs_trl.py --only dpo # one half (DPO: about 15 minutes on 2 shared cores)
    python benchmarks/vs_trl.py --quick    # a small model, a few steps, one repeat: a CI
                                           # smoke test (its figures mean little)
    python benchmarks/vs_trl.py --steps 10 --warmup 2 --batch 8 --seq 256 --repeats 1
                                           # the larger size (one repeat took 38 minutes
                                           # on the loaded machine)

DPO. Same model, data and run shape on both sides (see ``vs_trl_setup`` and ``vs_trl_dpo``):
a randomly initialised Llama of about 30M parameters with a 32,000-entry vocabulary, saved to
a temporary folder; the workbench's built-in ``order`` preference pairs behind few-shot
prompts, written as one prompt/chosen/rejected JSONL file; ``--batch`` pairs of up to
``--seq`` tokens per step, ``--warmup`` untimed steps then ``--steps`` timed ones; beta 0.1,
learning rate 1e-6 constant, gradient clipping 1.0, AdamW without weight decay. Rows:

- ``workbench``: ``workbench.run`` with ``method: dpo`` as a user runs it: ``kernels: auto``
  (on a CPU with this vocabulary: the fused, chunked loss head, which scores only the
  completion tokens), the reference log-probs precomputed before training (the registry's
  reference kind for dpo), float32, no gradient checkpointing (the workbench has none);
- ``trl``: DPOTrainer at the same configuration (float32, gradient checkpointing off,
  ``precompute_ref_log_probs=True``); the headline compares these two;
- ``trl-defaults``: DPOTrainer with TRL's defaults for those settings (a reference model
  kept beside the policy and run at every step, gradient checkpointing on, bf16 mixed
  precision), the rest as above.

GRPO (``vs_trl_grpo``): the same model folder; the built-in ``order`` task's prompts as they
are; ``--batch`` prompts per step, ``--group`` completions per prompt, each exactly
``--completion`` tokens long on both sides (no early end), the built-in ``length`` reward on
both, beta 0 (no reference model), one optimizer step per batch of samples, learning rate
1e-6 constant, clipping 1.0, AdamW without weight decay, float32, no gradient checkpointing.
Rows: ``workbench`` (``method: grpo``, ``kernels: auto``) and ``trl`` (GRPOTrainer, sampling
with transformers' ``generate``, no vLLM). tokens/s: completion tokens of the timed steps
counted twice (generated once, trained once; prompt tokens on neither side) over their wall
time; ``of it gen`` is the part of that time spent sampling.

Every measured run is a child process of its own (``--child workbench|trl``), so its peak
memory is its own high-water mark, minus its resident memory after the imports and the
model load. The rows of one repeat run back to back, in an order
that alternates between repeats; each figure is the median over ``--repeats``. tokens/s:
(DPO) non-pad tokens of the timed batches over their wall time, the reference log-probs'
share included. Children run with ``--threads`` intra-op threads (default 1: on a shared 2-core
machine a two-threaded step waits on preempted threads, and that wait, not the work, set
the figures of earlier benchmarks here). The table comes first; the last lines are the
headline figures, ``BENCH <figure> <value> <unit> target=<target>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine_load import load_average

# (hidden, layers, heads): about 30M parameters with the 32k vocabulary (16.4M of them the
# tied embedding); the quick run's model is a fraction of that.
MODEL = {"hidden": 512, "layers": 4, "heads": 8}
QUICK_MODEL = {"hidden": 64, "layers": 1, "heads": 4}
FULL = {"steps": 6, "warmup": 1, "batch": 4, "seq": 128, "repeats": 3}
QUICK = {"steps": 2, "warmup": 1, "batch": 2, "seq": 64, "repeats": 1}
BETA, LR = 0.1, 1e-6
HELD_OUT_PAIRS = 8  # the workbench's held-out rows (its objective at the start and the end)
# Rows: (name, child side, settings). TRL's defaults row leaves TRL's precision, gradient
# checkpointing and reference handling as TRL sets them.
ROWS = (
    ("workbench", "workbench", {}),
    ("trl", "trl", {"trl_defaults": False}),
    ("trl-defaults", "trl", {"trl_defaults": True, "trl_default_overrides": {}}),
)
HEADLINE = ("workbench", "trl")
GRPO_FULL = {"steps": 4, "warmup": 1, "batch": 4, "group": 4, "completion": 32, "repeats": 3}
GRPO_QUICK = {"steps": 1, "warmup": 1, "batch": 2, "group": 2, "completion": 4, "repeats": 1}
HELD_OUT_PROMPTS = 2
GRPO_ROWS = (("workbench", "grpo-workbench", {}), ("trl", "grpo-trl", {}))


def build(job: dict) -> dict:
    """Child: the model folder and the data file both sides read."""
    from transformers import AutoTokenizer
    from vs_trl_setup import build_model_folder, few_shot_pairs, task_prompts, write_pairs

    folder = Path(job["folder"])
    params = build_model_folder(folder / "model", seq=job["seq"], **job["model_shape"])
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    n_pairs = (job["warmup"] + job["steps"]) * job["batch"] + HELD_OUT_PAIRS
    records = few_shot_pairs(tokenizer, n_pairs, job["seq"])
    write_pairs(folder / "pairs.jsonl", records)
    lengths = [len(tokenizer(r["prompt"] + r["chosen"])["input_ids"]) + 2 for r in records]
    completion = [len(tokenizer(r["chosen"])["input_ids"]) + 1 for r in records]
    n_prompts = (job["grpo"]["warmup"] + job["grpo"]["steps"]) * job["grpo"][
        "batch"
    ] + HELD_OUT_PROMPTS
    prompts = task_prompts(n_prompts)
    write_pairs(folder / "prompts.jsonl", prompts)
    prompt_tokens = [len(tokenizer(r["prompt"])["input_ids"]) for r in prompts]
    return {"params": params, "pairs": n_pairs, "mean_tokens": statistics.mean(lengths),
            "mean_completion_tokens": statistics.mean(completion), "prompts": n_prompts,
            "mean_prompt_tokens": statistics.mean(prompt_tokens)}  # fmt: skip


def child(side: str, job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    if side == "build":
        return build(job)
    import vs_trl_dpo
    import vs_trl_grpo

    return {"workbench": vs_trl_dpo.run_workbench, "trl": vs_trl_dpo.run_trl,
            "grpo-workbench": vs_trl_grpo.run_workbench,
            "grpo-trl": vs_trl_grpo.run_trl}[side](job)  # fmt: skip


def run_child(side: str, job: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TQDM_DISABLE="1", OMP_NUM_THREADS=str(job["threads"]),
               HF_DATASETS_CACHE=str(Path(job["folder"]) / "datasets"))  # fmt: skip
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", side,
                             "--job", json.dumps(job)],
                            capture_output=True, text=True, env=env)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"child {side} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def versions() -> dict:
    from importlib import metadata

    info = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "lightning", "peft", "mlflow"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def measure(job: dict, repeats: int, rows=ROWS) -> dict[str, list[dict]]:
    """{row name: one result per repeat}; a repeat's rows back to back, order alternating."""
    results: dict[str, list[dict]] = {name: [] for name, _, _ in rows}
    for repeat in range(repeats):
        for name, side, settings in rows if repeat % 2 == 0 else rows[::-1]:
            results[name].append(run_child(side, {**job, **settings}))
    return results


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def print_table(results: dict[str, list[dict]], phase=("reference_wall_s", "of it ref")) -> None:
    """The rows' medians; ``phase``: (the figure, its column title) of the timed part shown."""
    base = results[HEADLINE[1]]
    header = (f"{'row':<13} {'tokens/s':>9} {'tok/cpu-s':>9} {'timed s':>8} {phase[1]:>9} "
              f"{'tokens':>7} {'peak MiB':>9} {'base MiB':>8} {'speed/trl':>9} {'mem/trl':>7}  "
              "configuration")  # fmt: skip
    print(header)
    print("-" * (len(header) + 60))
    for name, rs in results.items():
        print(f"{name:<13} {median(rs, 'tokens_per_s'):>9.1f} "
              f"{median(rs, 'tokens_per_cpu_s'):>9.1f} {median(rs, 'wall_s'):>8.2f} "
              f"{median(rs, phase[0]):>9.2f} {median(rs, 'tokens'):>7.0f} "
              f"{median(rs, 'peak_mb'):>9.1f} {median(rs, 'baseline_mb'):>8.1f} "
              f"{median(rs, 'tokens_per_s') / median(base, 'tokens_per_s'):>9.3f} "
              f"{median(rs, 'peak_mb') / median(base, 'peak_mb'):>7.3f}  "
              f"{rs[0]['note']}")  # fmt: skip
    print(
        "repeats (tokens/s | peak MiB): "
        + "; ".join(
            f"{name} " + ", ".join(f"{r['tokens_per_s']:.0f}|{r['peak_mb']:.0f}" for r in rs)
            for name, rs in results.items()
        )
    )


def ratio(results: dict[str, list[dict]], key: str) -> float:
    """The headline row's median of ``key`` over the baseline row's."""
    ours, theirs = (results[name] for name in HEADLINE)
    return median(ours, key) / median(theirs, key)


def compare_dpo(job: dict, built: dict, repeats: int) -> list[str]:
    """The DPO table; returns its BENCH lines."""
    job = {**job, "eval_fraction": HELD_OUT_PAIRS / built["pairs"]}
    print("\nDPO: the workbench against TRL's DPOTrainer")
    print(f"data: {built['pairs']} pairs, {built['mean_tokens']:.0f} tokens per row on average "
          f"({built['mean_completion_tokens']:.1f} of them completion); "
          f"steps: {job['warmup']} warm-up + "
          f"{job['steps']} timed, batch {job['batch']} pairs, max length {job['seq']}; "
          f"repeats: {repeats}")  # fmt: skip
    results = measure(job, repeats)
    print()
    print_table(results)
    return [
        f"BENCH dpo_tokens_per_s_ratio_vs_trl {ratio(results, 'tokens_per_s'):.3f} x target=>=1.1",
        f"BENCH dpo_peak_mem_ratio_vs_trl {ratio(results, 'peak_mb'):.3f} x target=<=0.6",
    ]


def compare_grpo(job: dict, built: dict, repeats: int) -> list[str]:
    """The GRPO table; returns its BENCH lines."""
    job = {**job, **job["grpo"], "eval_fraction": HELD_OUT_PROMPTS / built["prompts"],
           "prompts_data": str(Path(job["folder"]) / "prompts.jsonl")}  # fmt: skip
    print("\nGRPO: the workbench against TRL's GRPOTrainer (transformers generate, no vLLM)")
    print(f"data: {built['prompts']} prompts of {built['mean_prompt_tokens']:.1f} tokens on "
          f"average; steps: {job['warmup']} warm-up + {job['steps']} timed, "
          f"{job['batch']} prompts x {job['group']} completions "
          f"of exactly {job['completion']} tokens per step; repeats: {repeats}")  # fmt: skip
    results = measure(job, repeats, GRPO_ROWS)
    print()
    print_table(results, phase=("generation_wall_s", "of it gen"))
    return [
        f"BENCH grpo_tokens_per_s_ratio_vs_trl {ratio(results, 'tokens_per_s'):.3f} x target=>=1.1",
        f"BENCH grpo_peak_mem_ratio_vs_trl {ratio(results, 'peak_mb'):.3f} x target=<=0.8",
    ]


def sizes_of(defaults: dict, args) -> tuple[dict, int]:
    """``defaults`` with the sizes given on the command line; (sizes, repeats)."""
    sizes = dict(defaults)
    sizes.update({k: getattr(args, k) for k in sizes if getattr(args, k, None) is not None})
    return sizes, sizes.pop("repeats")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small model, few steps, one repeat (CI)"
    )
    parser.add_argument("--only", choices=("dpo", "grpo"), help="run one half (default: both)")
    parser.add_argument(
        "--steps", type=int,
        help=f"timed steps (default DPO {FULL['steps']}, GRPO {GRPO_FULL['steps']}; "
             f"quick {QUICK['steps']}, {GRPO_QUICK['steps']})",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']})"
    )
    parser.add_argument(
        "--batch", type=int,
        help=f"preference pairs (DPO, default {FULL['batch']}) or prompts (GRPO, default "
             f"{GRPO_FULL['batch']}) per step",
    )  # fmt: skip
    parser.add_argument(
        "--seq", type=int, help=f"DPO: tokens per row at most (default {FULL['seq']})"
    )
    parser.add_argument(
        "--group", type=int, help=f"GRPO: completions per prompt (default {GRPO_FULL['group']})"
    )
    parser.add_argument(
        "--completion", type=int,
        help=f"GRPO: tokens of every completion (default {GRPO_FULL['completion']})",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, help=f"runs per row (default {FULL['repeats']}; quick 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads per child (default 1)"
    )
    parser.add_argument(
        "--child",
        choices=("build", "workbench", "trl", "grpo-workbench", "grpo-trl"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.job))))
        return 0

    sizes, repeats = sizes_of(QUICK if args.quick else FULL, args)
    grpo_sizes, grpo_repeats = sizes_of(GRPO_QUICK if args.quick else GRPO_FULL, args)
    print("The workbench against TRL, CPU")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; "
          + ", ".join(f"{k} {v}" for k, v in versions().items()))  # fmt: skip
    print(f"command: python benchmarks/vs_trl.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        job = {**sizes, "grpo": grpo_sizes, "folder": tmp, "threads": args.threads, "beta": BETA,
               "lr": LR, "model": str(Path(tmp) / "model"), "data": str(Path(tmp) / "pairs.jsonl"),
               "model_shape": QUICK_MODEL if args.quick else MODEL}  # fmt: skip
        built = run_child("build", job)
        print(f"model: Llama {job['model_shape']}, vocabulary 32000, "
              f"{built['params'] / 1e6:.1f}M parameters; "
              f"intra-op threads: {args.threads}")  # fmt: skip
        bench = []
        if args.only in (None, "dpo"):
            bench += compare_dpo(job, built, repeats)
        if args.only in (None, "grpo"):
            bench += compare_grpo(job, built, grpo_repeats)
    print(f"\nload average at end: {load_average()}")
    print()
    print("\n".join(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
