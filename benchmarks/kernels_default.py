"""Whole training runs with ``kernels: off`` against ``kernels: auto``: is auto a safe default?

    python benchmarks/kernels_default.py            # full run (about 15 minutes on 2 shared
                                                    # CPU cores)
    python benchmarks/kernels_default.py --quick    # small models, one task, a few steps, one
                                                    # round: a CI smoke test (its figures mean
                                                    # little)
    python benchmarks/kernels_default.py --family gemma3   # the local model a Gemma 3 (text)
                                                    # instead of a Llama, no tiny-base cases

Each measurement is one whole ``workbench.run`` (tracking to a temporary sqlite store) in
its OWN process, so that peak memory is that run's alone; only the tiny-base runs of a
round share one process, every variant of a task back to back (their peak memory stays
below the baseline taken after the model load, so none is reported; pairing them in one
process keeps other processes' load on both sides of each ratio). Variants of the spec's
``kernels``:

- ``off``: the plain transformers model;
- ``auto``: what ``kernels: auto`` does on this machine (on a CPU: only the ops that
  ``workbench.models.kernel_patch.auto_left_out`` keeps; the run's kernel tag says which ran);
- ``head``: ``auto`` with the fused loss head at every vocabulary size (its CPU threshold set
  to 0): how the head's threshold was chosen;
- ``torch``: every fused op through its chunked torch path (RMSNorm, SwiGLU, the head): why
  ``auto`` leaves the elementwise ops out on a CPU;
- ``elementwise`` and ``head-only``: ``auto`` with the chunked RMSNorm and SwiGLU paths on a
  CPU whatever the allocator, or on none (``AUTO_CPU_ELEMENTWISE_ALLOCATORS``): why ``auto``
  runs them on mimalloc only (``--variants elementwise,head-only`` once per ``--allocator``).

Cases:

- ``tiny/<task>``: the built-in tiny base (vocabulary ~380) on each built-in task, with the
  task's default method and the default adapter (full fine-tuning), batch 16;
- ``llama-<V>``: a Llama built locally (random weights, no hub: hidden 256, 4 layers,
  tied embeddings) with a word-level tokenizer of V entries, LoRA SFT on prompt/completion
  rows of ~120 tokens (the prompt masked, as in SFT), batch 8 x 128 tokens;
- ``--family gemma3`` / ``gemma2``: the same cases (``gemma3-<V>``, ``gemma2-<V>``) on a
  model of that family, shaped like Gemma 3 270M (4 heads, one key/value head, RMSNorms
  around each sublayer and on queries and keys, a GELU-tanh-gated MLP; no final soft cap)
  or Gemma 2 (a final-logit soft cap of 30): what ``auto`` does for a family other than
  Llama's. The tiny-base cases are left out (they do not depend on the family).

Figures per run: the CPU time of a step (process CPU time between the run's step events,
one intra-op thread: robust to other processes on a shared machine, which the wall time
is not) and its wall time ``perf/step_s`` (each the median over the steps after the
first), the run's ``perf/peak_mem_mb`` (the process's high-water RSS minus the one after
the model load) and
the held-out completion loss at the end (objective ``heldout_completion_nll``, source
``term:completion``, added to the task's own). A full run repeats every measurement in
``--rounds`` rounds, the variants of one case back to back in an order that alternates between
rounds; a time ratio is the median over rounds of each round's ratio to ``off``, so load from
other processes on a shared machine hits both sides. The table comes first; the last lines are
the headline figures in the house convention ``BENCH <figure> <value> <unit> target=<target>``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

from child_jobs import add_jobs_argument, run_children, side_by_side_note
from machine_load import load_average

TASKS = ("arithmetic", "reverse", "sort", "order")
# The local model: (vocabulary, hidden, layers); the quick run uses a much smaller one.
LOCAL = {"hidden": 256, "layers": 4, "vocabs": (2048, 32000)}
QUICK_LOCAL = {"hidden": 64, "layers": 1, "vocabs": (2048,)}
# The families the local model can be built as (--family).
FAMILIES = ("llama", "gemma3", "gemma2")
QUICK_TINY = {"hidden_size": 64, "layers": 2, "heads": 4, "vocab_size": 320,
              "pretrain_steps": 60, "pretrain_batch": 32}  # fmt: skip
STEPS = {"tiny": 30, "local": 10}
QUICK_STEPS = {"tiny": 3, "local": 3}
# Intra-op threads (None: torch's default, one per core). On a shared 2-core machine a
# two-threaded step waits on preempted threads at every parallel region, and that wait, not
# the ops, decided the figure (the same code measured 7x apart in one run); one thread
# compares the ops' cost.
THREADS = {"tiny": 1, "local": 1}
PROMPT_WORDS, COMPLETION_WORDS = 40, 80
# Added to each run's objectives: the held-out completion loss, through the method's module
# (so through the fused head where it runs).
HELDOUT_LOSS = {"name": "heldout_completion_nll", "direction": "min", "source": "term:completion"}


# ---------------------------------------------------------------------------------------
# the cases

# The spec's ``kernels`` for each variant (``head``, ``elementwise`` and ``head-only`` change
# auto's CPU rule in the worker).
VARIANT_KERNELS = {"off": "off", "auto": "auto", "head": "auto", "elementwise": "auto",
                   "head-only": "auto", "torch": "torch"}  # fmt: skip


def case_specs(quick: bool, folder: Path, family: str = "llama") -> dict[str, dict]:
    """{case name: {"spec": run spec dict (without kernels), "kind", "variants"}}; the
    local model of ``family``, and the tiny-base cases with a Llama only."""
    tiny_variants = ("off", "auto") if quick else ("off", "auto", "head", "torch")
    steps = QUICK_STEPS if quick else STEPS
    common = {"eval": {"max_new_tokens": 1, "samples_logged": 0, "batch_size": 16},
              "tracking": {"experiment": "kernels-default", "log_model": False}}  # fmt: skip
    cases = {}
    tiny = {"name": "tiny", **({"tiny": QUICK_TINY} if quick else {})}
    tasks = TASKS[:1] if quick else TASKS
    for task in tasks if family == "llama" else ():
        cases[f"tiny/{task}"] = {
            "kind": "tiny",
            "variants": tiny_variants,
            "spec": {"model": tiny, "data": {"source": task, "train_size": 800, "eval_size": 16},
                     "train": {"steps": steps["tiny"], "eval_every": steps["tiny"]},
                     **common},
        }  # fmt: skip
    local = QUICK_LOCAL if quick else LOCAL
    for vocab in local["vocabs"]:
        largest = vocab == max(local["vocabs"])
        cases[f"{family}-{vocab // 1000}k" if vocab >= 1000 else f"{family}-{vocab}"] = {
            "kind": "local",
            "variants": ("off", "auto") if quick
                        else ("off", "auto", "torch") if largest else ("off", "auto", "head"),
            "spec": {"model": {"name": str(folder / f"{family}-{vocab}")},
                     "data": {"source": str(folder / f"rows-{vocab}.jsonl"), "eval_size": 16},
                     "adapter": {"name": "lora"},
                     "train": {"steps": steps["local"], "eval_every": steps["local"],
                               "batch_size": 8, "max_length": 128},
                     **common},
            "build": {"family": family, "vocab": vocab, "hidden": local["hidden"],
                      "layers": local["layers"]},
        }  # fmt: skip
    return cases


def local_model(family: str, vocab: int, hidden: int, layers: int):
    """A random-weight causal LM of ``family`` (tied embeddings, ids 0-2 pad, bos, eos)."""
    import transformers

    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    shape = {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": hidden * 3,
             "num_hidden_layers": layers, "num_attention_heads": 4,
             "max_position_embeddings": 256, "tie_word_embeddings": True}  # fmt: skip
    if family == "llama":
        config = transformers.LlamaConfig(**shape, num_key_value_heads=4, **ids)
        return transformers.LlamaForCausalLM(config)
    # Gemma: one key/value head, head size hidden / 4 (Gemma 3 270M: 4 heads of 256 over
    # 640), local attention over a window shorter than the rows.
    gemma = {**shape, "num_key_value_heads": 1, "head_dim": hidden // 4,
             "query_pre_attn_scalar": hidden // 4, "sliding_window": 64, **ids}  # fmt: skip
    if family == "gemma3":
        config = transformers.Gemma3TextConfig(**gemma, final_logit_softcapping=None)
        return transformers.Gemma3ForCausalLM(config)
    if family == "gemma2":
        config = transformers.Gemma2Config(**gemma, final_logit_softcapping=30.0)
        return transformers.Gemma2ForCausalLM(config)
    raise ValueError(f"family {family!r} is not one of {FAMILIES}")


def build_model(
    folder: Path, family: str, vocab: int, hidden: int, layers: int, rows: int = 400
) -> None:
    """A random-weight model of ``family`` with a ``vocab``-entry word-level tokenizer, and a
    JSONL of prompt/completion rows whose words follow a Zipf law over the vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = [f"w{i}" for i in range(vocab - len(specials))]
    table = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")  # fmt: skip
    torch.manual_seed(0)
    model_folder = folder / f"{family}-{vocab}"
    local_model(family, vocab, hidden, layers).save_pretrained(
        model_folder, safe_serialization=True
    )
    tokenizer.save_pretrained(model_folder)
    rng = random.Random(0)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    with open(folder / f"rows-{vocab}.jsonl", "w") as handle:
        for _ in range(rows):
            prompt, completion = (" ".join(rng.choices(words, weights, k=n))
                                  for n in (PROMPT_WORDS, COMPLETION_WORDS))  # fmt: skip
            handle.write(json.dumps({"prompt": prompt, "completion": " " + completion}) + "\n")


# ---------------------------------------------------------------------------------------
# worker: one whole run in a fresh process


class _StepClockBase:
    def __init__(self):
        self.marks: list[float] = []

    def on_start(self, context) -> None:
        self.marks = [time.process_time()]

    def on_step(self, step, metrics) -> None:
        self.marks.append(time.process_time())

    def per_step(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def StepClock():  # noqa: N802  (a RunObserver subclass, made once workbench is importable)
    """A run observer that notes the process CPU time at every optimizer step: with one
    intra-op thread, a step's CPU time is its cost without the waits that other processes
    on a shared machine impose (its wall time, ``perf/step_s``, includes them)."""
    from workbench.running.events import RunObserver

    return type("StepClock", (_StepClockBase, RunObserver), {})()


def worker(job: dict) -> dict:
    """Builds a local model (``build``), or runs ``cases`` one after another with
    ``variant``: {case: figures}."""
    if job.get("build"):
        build_model(Path(job["folder"]), **job["build"])
        return {}
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    from workbench import tracking
    from workbench.models import kernel_patch
    from workbench.spec.run_spec import RunSpec

    client = tracking.connect(job["store"])
    if "prepare" in job:  # create the store (and build the tiny base) before any timing
        from workbench.models.loading import load_base

        client.search_experiments()
        if job["prepare"]:
            load_base(RunSpec.parse(job["prepare"]).model, log=lambda *a: None)
        return {}
    shipped_threshold = kernel_patch.AUTO_CPU_HEAD_MIN_VOCAB
    shipped_elementwise = kernel_patch.AUTO_CPU_ELEMENTWISE_ALLOCATORS
    elementwise = {"elementwise": ("system", "mimalloc"), "head-only": ()}
    out = {}
    for index, (case, spec) in enumerate(job["cases"].items()):
        # Several variants in one process (the tiny base): back to back, order alternating.
        variants = job["variants"] if index % 2 == 0 else job["variants"][::-1]
        for variant in variants:
            kernel_patch.AUTO_CPU_HEAD_MIN_VOCAB = 0 if variant == "head" else shipped_threshold
            kernel_patch.AUTO_CPU_ELEMENTWISE_ALLOCATORS = elementwise.get(
                variant, shipped_elementwise
            )
            kernels = VARIANT_KERNELS[variant]
            out[f"{case}|{variant}"] = _one_run(
                client, job, case, spec, kernels, len(job["cases"]) == 1 and len(variants) == 1
            )
    return out


def _one_run(client, job, case, spec, kernels, own_process) -> dict:
    import workbench
    from workbench import tracking
    from workbench.spec.run_spec import RunSpec

    spec = {**spec, "kernels": kernels, "tracking": {**spec["tracking"], "uri": job["store"]}}
    # The task's own objectives (mo-sft trains on their terms), plus the held-out loss.
    # A file's default objective (metric:eval_loss: the plain logits of eval.batch_size
    # rows at once) is replaced by the same loss through the method's module, so that
    # the peak is training's.
    own = [o.model_dump(mode="json") for o in RunSpec.parse(spec).objectives]
    own = [o for o in own if o["source"] != "metric:eval_loss"]
    spec["objectives"] = [*own, {**HELDOUT_LOSS, "term": None if own else "completion"}]
    clock = StepClock()
    result = workbench.run(spec, log=lambda *a: None, observers=[clock])
    run = client.get_run(result.run_id)
    step_s = [
        v for step, v in tracking.metric_history(client, result.run_id, "perf/step_s") if step > 1
    ]
    return {
        "status": run.info.status,
        "step_s": statistics.median(step_s),
        "step_cpu_s": statistics.median(clock.per_step()[1:]),
        "peak_mb": run.data.metrics["perf/peak_mem_mb"] if own_process else None,
        "eval_loss": run.data.metrics[f"objective/{HELDOUT_LOSS['name']}"],
        "tag": run.data.tags.get("workbench.kernels", ""),
        "allocator": run.data.tags.get("workbench.allocator", "?"),
    }


# The GPU comparison: a SmolLM2-135M-shaped Llama (random weights), bfloat16, full fine-tuning
# steps (forward, backward, AdamW) on batch x sequence tokens with the first third of each row
# masked as a prompt. It needs only torch, transformers and triton (no tracking store).
GPU_MODEL = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
             "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3}  # fmt: skip
GPU_SHAPES = ((8, 1024), (4, 512))
GPU_VARIANTS = {"off": None, "auto": {},
                "auto_head_only": {"rms_norm": "measured", "swiglu": "measured"},
                "auto_elementwise_only": {"fused_linear_logprobs": "measured"}}  # fmt: skip


def gpu_steps(batch: int, seq: int, repeats: int = 10) -> dict:
    """{variant: {"step_s", "peak_mb", "loss"}}: median step time over ``repeats`` steps after
    3 warm-up steps, and the peak of allocated memory above the one before them."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models.kernel_patch import head_logprobs, patch_model

    config = LlamaConfig(**GPU_MODEL, tie_word_embeddings=True, max_position_embeddings=2048)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).to("cuda", torch.bfloat16)
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(4, config.vocab_size, (batch, seq), device="cuda", generator=gen)
    mask = torch.ones_like(ids)
    targets = ids[:, 1:].clone()
    targets[:, : seq // 3] = -100
    scored = targets != -100
    out = {}
    for variant, leave_out in GPU_VARIANTS.items():
        model = copy.deepcopy(base).train()
        usage = (
            None
            if leave_out is None
            else patch_model(model, "auto", on_gpu=True, leave_out=leave_out)
        )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(model=model, usage=usage, opt=opt):
            opt.zero_grad(set_to_none=True)
            if usage is not None and usage.fuses_head:
                logp = head_logprobs(model, usage, ids, mask, [targets])[0]
            else:  # what the plain path computes: log-softmax of all the logits
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                logp = (
                    logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
                )
            loss = -(logp * scored).sum() / scored.sum()
            loss.backward()
            opt.step()
            return float(loss.detach())

        first = step()
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out[variant] = {"step_s": statistics.median(times), "loss": first,
                        "peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20,
                        "tag": usage.tag() if usage is not None
                               else "none (kernels: off)"}  # fmt: skip
        del model, opt, step
        torch.cuda.empty_cache()
    return out


def gpu_section() -> list[tuple[str, float, str]]:
    """Runs the GPU comparison (in this process) and prints its table; BENCH lines to print."""
    import torch

    print(f"\nGPU ({torch.cuda.get_device_name()}), bfloat16, torch {torch.__version__}: "
          f"a SmolLM2-135M-shaped Llama {GPU_MODEL}, full fine-tuning steps")  # fmt: skip
    print(f"{'batch x seq':<12} {'variant':<22} {'ms/step':>8} {'peak MiB':>9} {'time/off':>8} "
          f"{'mem/off':>7} {'first loss':>10}  kernel tag")  # fmt: skip
    lines = []
    for batch, seq in GPU_SHAPES:
        res = gpu_steps(batch, seq)
        off = res["off"]
        for variant, r in res.items():
            print(f"{f'{batch} x {seq}':<12} {variant:<22} {r['step_s'] * 1000:>8.2f} "
                  f"{r['peak_mb']:>9.1f} {r['step_s'] / off['step_s']:>8.3f} "
                  f"{r['peak_mb'] / off['peak_mb']:>7.3f} "
                  f"{r['loss']:>10.5f}  {r['tag']}")  # fmt: skip
        if (batch, seq) == GPU_SHAPES[0]:
            lines.append(
                ("gpu_kernels_auto_step_time_ratio", res["auto"]["step_s"] / off["step_s"], "<=1.0")
            )
            lines.append(
                (
                    "gpu_kernels_auto_peak_mem_ratio",
                    res["auto"]["peak_mb"] / off["peak_mb"],
                    "<=0.6",
                )
            )
    return lines


def run_worker(job: dict) -> dict:
    from workbench.running import allocator

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if job.get("threads") == 1:
        env["OMP_NUM_THREADS"] = "1"
    # Each run on the allocator asked for: mimalloc preloaded as the workbench preloads its
    # training processes, or the C library's malloc.
    env[allocator.ALLOCATOR_ENV] = job.get("allocator", "mimalloc")
    env = allocator.preload_environment(env)
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"worker {list(job.get('cases', []))} {job.get('variants')} failed:\n"
            f"{result.stderr[-4000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# driver


def versions() -> dict:
    from importlib import metadata

    info = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "lightning", "mlflow"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def measure(cases: dict, rounds: int, store: str, malloc: str, side_by_side: int = 1) -> dict:
    """{(case, variant): [one result per round]}; ``side_by_side`` processes at a time
    (smoke runs only: ``child_jobs``).

    A local-model run has a process of its own (its peak memory is reported); the variants
    of a case run back to back, in an order that alternates between rounds. The tiny-base
    runs of a round share one process, every variant of a task back to back (order
    alternating between tasks and rounds): their peak memory stays below the baseline taken
    after the model load, and pairing them within one process keeps the load that other
    processes put on a shared machine on both sides of each ratio.
    """
    tiny = [c for c in cases if cases[c]["kind"] == "tiny"]
    jobs = []
    for round_index in range(rounds):
        flip = round_index % 2 == 1
        if tiny:
            variants = cases[tiny[0]]["variants"]
            jobs.append({"cases": {c: cases[c]["spec"] for c in tiny}, "threads": THREADS["tiny"],
                         "variants": variants[::-1] if flip else variants,
                         "store": store, "allocator": malloc})  # fmt: skip
        for case, info in cases.items():
            if info["kind"] == "tiny":
                continue
            for variant in info["variants"][::-1] if flip else info["variants"]:
                jobs.append({"cases": {case: info["spec"]}, "variants": (variant,),
                             "threads": THREADS[info["kind"]], "store": store,
                             "allocator": malloc})  # fmt: skip
    results: dict = {}
    for outputs in run_children(run_worker, jobs, side_by_side):
        for key, out in outputs.items():
            case, variant = key.split("|")
            results.setdefault((case, variant), []).append(out)
    return results


def time_ratio(results: dict, case: str, variant: str, key: str = "step_cpu_s") -> float:
    """Median over rounds of the round's step-time ratio to ``off`` (CPU time per step;
    ``key="step_s"``: wall time)."""
    pairs = zip(results[(case, variant)], results[(case, "off")])
    return statistics.median(r[key] / b[key] for r, b in pairs)


def peak_mb(results: dict, case: str, variant: str) -> float | None:
    values = [r["peak_mb"] for r in results[(case, variant)]]
    return None if None in values else statistics.median(values)


def mem_ratio(results: dict, case: str, variant: str) -> float | None:
    base, mine = peak_mb(results, case, "off"), peak_mb(results, case, variant)
    return None if base is None or mine is None or base <= 0 else mine / base


def loss_diff(results: dict, case: str, variant: str) -> float:
    """Largest relative difference of the final held-out loss from ``off``'s, over rounds."""
    pairs = zip(results[(case, variant)], results[(case, "off")])
    return max(abs(r["eval_loss"] - b["eval_loss"]) / abs(b["eval_loss"]) for r, b in pairs)


def print_table(cases: dict, results: dict) -> None:
    header = (f"{'case':<16} {'variant':<11} {'cpu s/step':>10} {'wall s/step':>11} "
              f"{'peak MiB':>9} {'eval loss':>10} {'cpu/off':>7} {'wall/off':>8} {'mem/off':>7} "
              f"{'loss rel diff':>13}  "
              "kernel tag")  # fmt: skip
    print(header)
    print("-" * (len(header) + 40))
    for case, info in cases.items():
        for variant in info["variants"]:
            rs = results[(case, variant)]
            peak, ratio = peak_mb(results, case, variant), mem_ratio(results, case, variant)
            print(f"{case:<16} {variant:<11} "
                  f"{statistics.median(r['step_cpu_s'] for r in rs):>10.4f} "
                  f"{statistics.median(r['step_s'] for r in rs):>11.4f} "
                  f"{'-' if peak is None else f'{peak:.1f}':>9} {rs[0]['eval_loss']:>10.6f} "
                  f"{time_ratio(results, case, variant):>7.3f} "
                  f"{time_ratio(results, case, variant, 'step_s'):>8.3f} "
                  f"{'-' if ratio is None else f'{ratio:.3f}':>7} "
                  f"{loss_diff(results, case, variant):>13.1e}  {rs[0]['tag']}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round (CI)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated variants to run besides off, in every case (default: each "
        "case's own list)",
    )
    parser.add_argument(
        "--family",
        choices=FAMILIES,
        default="llama",
        help="the local model's family (not llama: no tiny-base cases)",
    )
    parser.add_argument(
        "--gpu-only",
        action="store_true",
        help="only the GPU comparison (needs CUDA; no tracking store)",
    )
    parser.add_argument(
        "--allocator",
        choices=("mimalloc", "system"),
        default="mimalloc",
        help="the runs' allocator (default mimalloc, as workbench training processes run)",
    )
    add_jobs_argument(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.gpu_only:
        print(f"command: python benchmarks/kernels_default.py {' '.join(sys.argv[1:])}".rstrip())
        print()
        for figure, value, target in gpu_section():
            print(f"BENCH {figure} {value:.3f} x target={target}")
        return 0

    rounds = args.rounds or (1 if args.quick else 2)
    print("Whole runs, kernels: off vs auto (and the variants that set auto's CPU rule)")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores; "
          + ", ".join(f"{k} {v}" for k, v in versions().items()))  # fmt: skip
    print(f"command: python benchmarks/kernels_default.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"rounds: {rounds}; steps per run: {QUICK_STEPS if args.quick else STEPS}; "
          f"intra-op threads: {THREADS} (None: torch's default); "
          "cpu/off, wall/off: median over rounds of each round's ratio of median step times (CPU, "
          "wall)")  # fmt: skip
    print(f"allocator of every run: {args.allocator}")
    if args.jobs > 1:
        print(side_by_side_note(args.jobs))
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="kernels-default-") as tmp:
        folder = Path(tmp)
        cases = case_specs(args.quick, folder, args.family)
        if args.variants:
            chosen = ("off", *(v for v in args.variants.split(",") if v != "off"))
            unknown = [v for v in chosen if v not in VARIANT_KERNELS]
            if unknown:
                parser.error(f"unknown variants {unknown}; choose from {list(VARIANT_KERNELS)}")
            for info in cases.values():
                info["variants"] = chosen
        store = f"sqlite:///{folder}/mlflow.db"
        builds = [
            {"build": info["build"], "folder": tmp} for info in cases.values() if "build" in info
        ]
        # The store, and the tiny base where its cases run, are made before any timing.
        tiny_spec = next((i["spec"] for i in cases.values() if i["kind"] == "tiny"), None)
        prepare = {"model": tiny_spec["model"]} if tiny_spec else {}
        builds.append({"prepare": prepare, "store": store})
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(run_worker, builds))
        results = measure(cases, rounds, store, args.allocator, args.jobs)
    ran_on = sorted({r["allocator"] for rs in results.values() for r in rs})
    print(f"the runs' allocator tags: {', '.join(ran_on)}")
    print()
    print_table(cases, results)
    print(f"\nload average at end: {load_average()}")

    tiny = [c for c in cases if c.startswith("tiny/")]
    local = [c for c in cases if cases[c]["kind"] == "local"]
    largest = local[-1]
    lines = [
        ("kernels_auto_tiny_step_time_ratio_max",
         max(time_ratio(results, c, "auto") for c in tiny), "<=1.05"),
    ] if tiny else []  # fmt: skip
    lines += [
        (f"kernels_auto_{largest.replace('-', '_')}_step_time_ratio",
         time_ratio(results, largest, "auto"), "<=0.95"),
        (f"kernels_auto_{largest.replace('-', '_')}_peak_mem_ratio",
         mem_ratio(results, largest, "auto"), "<=1.0"),
        ("kernels_auto_eval_loss_rel_diff_max",
         max(loss_diff(results, c, "auto") for c in cases), "<=0.0001"),
    ]  # fmt: skip
    import torch

    if torch.cuda.is_available() and not args.quick:
        lines += gpu_section()
    else:
        print("\nGPU: no CUDA device (or --quick); the GPU comparison (--gpu-only) not run.")
    print()
    for figure, value, target in lines:
        if "loss" in figure:
            print(f"BENCH {figure} {value:.6f} rel target={target}")
        else:
            print(f"BENCH {figure} {value:.3f} x target={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
