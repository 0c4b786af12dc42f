"""The two sides of the DPO comparison in ``benchmarks/vs_trl.py``, each run in a child process.

Both train DPO (sigmoid loss) on the same rows of the same JSONL file with the same model
folder, batch, sequence length, steps, beta, learning rate, schedule, clipping, AdamW and
precision (``job["precision"]``: float32, or bf16 autocast over float32 weights on both), full
fine-tuning, gradient checkpointing off, and report the same figures:

- the wall and CPU time of the steps after the warm-up, plus the share of the reference
  log-probs' precomputation that belongs to those steps' rows (the file holds exactly the
  rows of the run's steps, each trained once, so that share is steps / (warm-up + steps));
- the non-pad tokens (prompt and completion, chosen and rejected) of the timed batches;
- the resident memory right after the imports and the model load, its weights made resident
  (the baseline the parent counts the child's lifetime peak from, see ``child_peak_memory``).

Two hooks note what no public callback reports: the moment the model is loaded (the
memory baseline) and the time of the reference precomputation. Each wraps the library
function that does it and changes nothing it computes.
"""

from __future__ import annotations

import tempfile
import warnings

from run_figures import PhaseClock, StepMarks, rss_with_weights_mb, throughput
from vs_trl_setup import (
    precision_note,
    train_rows,
    trl_run_settings,
    workbench_note,
    workbench_spec,
)
from workbench_child import run_spec, step_token_marker

OBJECTIVE = {"name": "pairs_right", "direction": "max", "source": "term:reward_accuracy"}


def figures(marks: StepMarks, reference: PhaseClock, job: dict, baseline_mb: float) -> dict:
    """The figures every side reports (see the module docstring)."""
    warmup, steps = job["warmup"], job["steps"]
    share = steps / (warmup + steps)
    out = throughput(
        marks, warmup, warmup + steps, share * reference.wall_s, share * reference.cpu_s
    )
    return {**out, "reference_wall_s": share * reference.wall_s, "baseline_mb": baseline_mb}


# ---------------------------------------------------------------------------------------
# the workbench: workbench.run with a spec


def spec(job: dict, store: str) -> dict:
    # Held-out reward accuracy through the method's own module: no generation, no full logits.
    method = {"name": "dpo", "beta": job["beta"]}
    return workbench_spec(job, store, job["data"], method, OBJECTIVE, job["seq"])


def run_workbench(job: dict) -> dict:
    from workbench.methods.reference import Precomputed

    reference = PhaseClock()
    Precomputed.precompute = reference.wrap(
        Precomputed.precompute, counts=lambda strategy, split, *rest: split == "train"
    )
    marks = StepMarks()
    baseline_mb, kernels = run_spec(lambda store: spec(job, store), step_token_marker(marks))
    out = figures(marks, reference, job, baseline_mb)
    return {**out, "note": workbench_note(job, kernels, "reference precomputed, ")}


# ---------------------------------------------------------------------------------------
# TRL: DPOTrainer with a DPOConfig


def trl_config(job: dict, output_dir: str):
    """Equal configuration (``job["trl_defaults"]`` false): the job's precision, no gradient
    checkpointing, reference log-probs precomputed, and padding-free asked for (TRL 1.16 turns
    it off again with a warning: "temporarily unavailable after a refactor"; the row's note
    says what ran). Defaults: TRL's own precision, checkpointing and reference handling,
    where TRL can run them on a CPU."""
    from trl import DPOConfig

    settings = trl_run_settings(job, output_dir)
    shape = dict(
        per_device_train_batch_size=job["batch"],
        max_length=job["seq"],
        beta=job["beta"],
        loss_type=["sigmoid"],
    )
    if job["trl_defaults"]:
        for name in ("bf16", "gradient_checkpointing"):
            settings.pop(name)
        return DPOConfig(**settings, **shape)
    return DPOConfig(
        **settings,
        **shape,
        padding_free=True,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=job["batch"],
    )


def run_trl(job: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    baseline = rss_with_weights_mb(model)
    reference = PhaseClock()
    DPOTrainer._precompute_ref_logps = reference.wrap(
        DPOTrainer._precompute_ref_logps,
        counts=lambda trainer, dataset, name, *rest: name == "train",
    )
    marks = StepMarks()

    train, _ = train_rows(job["data"], job["eval_fraction"])
    with tempfile.TemporaryDirectory(prefix="vs-trl-out-") as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(
            model=model,
            args=trl_config(job, output_dir),
            train_dataset=Dataset.from_list(train),
            processing_class=tokenizer,
        )
        marks.follow(trainer, lambda batch: int(batch["attention_mask"].sum()))
        trainer.train()
        args = trainer.args
    out = figures(marks, reference, job, baseline)
    reference_note = "precomputed" if args.precompute_ref_log_probs else "model forward each step"
    out["note"] = (
        f"{precision_note(args.bf16)}, "
        f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
        f"reference {reference_note}, "
        f"padding-free {'on' if trainer.padding_free else 'off'}"
    )
    return out
