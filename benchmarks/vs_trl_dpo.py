"""The two sides of the DPO comparison in ``benchmarks/vs_trl.py``, each run in a child process.

Both train DPO (sigmoid loss) on the same rows of the same JSONL file with the same model
folder, batch, sequence length, steps, beta, learning rate, schedule, clipping and AdamW,
and report the same figures (:func:`figures`):

- the wall and CPU time of the steps after the warm-up, plus the share of the reference
  log-probs' precomputation that belongs to those steps' rows (the file holds exactly the
  rows of the run's steps, each trained once, so that share is steps / (warm-up + steps));
- the non-pad tokens (prompt and completion, chosen and rejected) of the timed batches;
- the process's high-water memory minus its resident memory right after the imports and
  the model load.

Two hooks note what no public callback reports: the moment the model is loaded (the
memory baseline) and the time of the reference precomputation. Each wraps the library
function that does it and changes nothing it computes.
"""

from __future__ import annotations

import tempfile
import warnings

from run_figures import PhaseClock, StepMarks, peak_rss_mb, rss_mb
from vs_trl_setup import read_pairs
from workbench_child import run_spec

OBJECTIVE = {"name": "pairs_right", "direction": "max", "source": "term:reward_accuracy"}


def figures(marks: StepMarks, reference: PhaseClock, job: dict, baseline_mb: float) -> dict:
    """The figures every side reports (see the module docstring)."""
    warmup, steps = job["warmup"], job["steps"]
    timed = marks.window(warmup, warmup + steps)
    share = steps / (warmup + steps)
    wall = timed["wall_s"] + share * reference.wall_s
    cpu = timed["cpu_s"] + share * reference.cpu_s
    return {"tokens": timed["tokens"], "wall_s": wall, "cpu_s": cpu,
            "train_wall_s": timed["wall_s"], "reference_wall_s": share * reference.wall_s,
            "tokens_per_s": timed["tokens"] / wall,
            "tokens_per_cpu_s": timed["tokens"] / cpu, "baseline_mb": baseline_mb,
            "peak_mb": peak_rss_mb() - baseline_mb}  # fmt: skip


def train_rows(job: dict) -> tuple[list[dict], int]:
    """The rows the workbench trains on (its seeded split of the file) and its held-out count."""
    from workbench.data.formats import split_rows

    rows = read_pairs(job["data"])
    train, held_out = split_rows(rows, job["eval_fraction"], seed=0)
    return train, len(held_out)


# ---------------------------------------------------------------------------------------
# the workbench: workbench.run with a spec


def workbench_spec(job: dict, store: str) -> dict:
    train, held_out = train_rows(job)
    total = job["warmup"] + job["steps"]
    return {
        "model": {"name": job["model"]},
        "data": {"source": job["data"], "train_size": len(train),
                 "eval_fraction": job["eval_fraction"], "eval_size": held_out},
        "method": {"name": "dpo", "beta": job["beta"]},
        "optimizer": {"name": "adamw", "lr": job["lr"], "weight_decay": 0.0},
        # Held-out reward accuracy through the method's own module: no generation, no full logits.
        "objectives": [OBJECTIVE],
        "train": {"steps": total, "batch_size": job["batch"], "max_length": job["seq"],
                  "eval_every": total, "scheduler": "constant", "grad_clip": 1.0,
                  "precision": "32-true", "seed": 0},
        # The reference log-probs are precomputed eval.batch_size pairs at a time: the batch,
        # as TRL's precompute_ref_batch_size defaults to.
        "eval": {"batch_size": job["batch"], "samples_logged": 0, "max_new_tokens": 1},
        "kernels": "auto",
        "tracking": {"uri": store, "experiment": "vs-trl", "log_model": False},
    }  # fmt: skip


def run_workbench(job: dict) -> dict:
    from workbench.methods.reference import Precomputed
    from workbench.running.events import RunObserver

    reference = PhaseClock()
    Precomputed.precompute = reference.wrap(
        Precomputed.precompute, counts=lambda strategy, split, *rest: split == "train"
    )
    marks = StepMarks()

    class MarkSteps(RunObserver):
        def on_step(self, step, metrics):
            marks.note(step, round(metrics["perf/tokens_per_s"] * metrics["perf/step_s"]))

    baseline_mb, kernels = run_spec(lambda store: workbench_spec(job, store), MarkSteps())
    out = figures(marks, reference, job, baseline_mb)
    out["note"] = f"kernels: auto ({kernels}); reference precomputed"
    return out


# ---------------------------------------------------------------------------------------
# TRL: DPOTrainer with a DPOConfig


def trl_config(job: dict, output_dir: str):
    """Equal configuration (``job["trl_defaults"]`` false): float32, no gradient checkpointing,
    reference log-probs precomputed. Defaults: TRL's own for those three, where TRL can run
    them on a CPU."""
    from trl import DPOConfig

    shape = dict(output_dir=output_dir, per_device_train_batch_size=job["batch"],
                 max_steps=job["warmup"] + job["steps"], max_length=job["seq"],
                 learning_rate=job["lr"], beta=job["beta"], loss_type=["sigmoid"],
                 lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0, seed=0,
                 use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                 dataloader_pin_memory=False)  # fmt: skip
    if job["trl_defaults"]:
        return DPOConfig(**shape, **job["trl_default_overrides"])
    return DPOConfig(**shape, bf16=False, gradient_checkpointing=False,
                     precompute_ref_log_probs=True,
                     precompute_ref_batch_size=job["batch"])  # fmt: skip


def run_trl(job: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    baseline = rss_mb()
    reference = PhaseClock()
    DPOTrainer._precompute_ref_logps = reference.wrap(
        DPOTrainer._precompute_ref_logps,
        counts=lambda trainer, dataset, name, *rest: name == "train",
    )
    marks, batch_tokens = StepMarks(), []

    class MarkSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.note(state.global_step, batch_tokens[state.global_step - 1])

    train, _ = train_rows(job)
    with tempfile.TemporaryDirectory(prefix="vs-trl-out-") as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(model=model, args=trl_config(job, output_dir),
                             train_dataset=Dataset.from_list(train),
                             processing_class=tokenizer, callbacks=[MarkSteps()])  # fmt: skip
        collate = trainer.data_collator

        def collate_and_count(examples):
            batch = collate(examples)
            batch_tokens.append(int(batch["attention_mask"].sum()))
            return batch

        trainer.data_collator = collate_and_count
        trainer.train()
        args = trainer.args
    out = figures(marks, reference, job, baseline)
    precision = "bfloat16 mixed" if args.bf16 else "float32"
    out["note"] = (
        f"{precision}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
        f"reference {'precomputed' if args.precompute_ref_log_probs else 'model forward each step'}"
    )
    return out
