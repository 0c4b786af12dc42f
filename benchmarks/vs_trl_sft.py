"""The two sides of the SFT comparison in ``benchmarks/vs_trl.py``, each run in a child process.

Both train LoRA SFT (the completion's tokens in the loss, the prompt's masked out) on the same
rows of the same prompt/completion JSONL file with the same model folder, batch, steps,
learning rate, schedule, clipping, AdamW and precision (``job["precision"]``: float32, or bf16
autocast over float32 weights on both), and the same adapter: the workbench's LoRA defaults
(rank 8, alpha 16, no dropout, on every attention and MLP projection), given to TRL as a peft
``LoraConfig``. Gradient checkpointing is off on both. Padding-free batches
(``job["padding_free"]``): on the workbench side ``train.padding_free`` where its spec offers it;
on TRL's ``padding_free`` (rows flattened into one sequence, position ids restarting per row;
TRL documents it for FlashAttention, and under SDPA on a CPU transformers builds the
block-diagonal mask from those position ids), or ``job["trl_padding_free"]`` false for TRL's
padded batches. TRL's own chunked loss head (its SFTTrainer computes the log-probs without
the full logits) runs as shipped; Liger's kernels need a GPU.

Both report the same figures: the wall and CPU time of the steps after the warm-up, the non-pad
tokens (prompt and completion) of those steps' batches, and the resident memory right after the
imports and the model load, its weights made resident (the baseline the parent counts the
child's lifetime peak from, see ``child_peak_memory``).
"""

from __future__ import annotations

import tempfile
import warnings

from run_figures import StepMarks, rss_with_weights_mb, throughput
from vs_trl_setup import (
    precision_note,
    train_rows,
    trl_run_settings,
    workbench_note,
    workbench_spec,
)
from workbench_child import run_spec, step_token_marker

OBJECTIVE = {"name": "heldout_nll", "direction": "min", "source": "term:completion"}


def figures(marks: StepMarks, job: dict, baseline_mb: float) -> dict:
    first, last = job["warmup"], job["warmup"] + job["steps"]
    return {**throughput(marks, first, last), "baseline_mb": baseline_mb}


# ---------------------------------------------------------------------------------------
# the workbench: workbench.run with method sft and adapter lora


def spec(job: dict, store: str) -> dict:
    # Held-out completion loss through the method's own loss head: no generation.
    return workbench_spec(job, store, job["data"], "sft", OBJECTIVE, job["seq"],
                          adapter={"name": "lora"})  # fmt: skip


def run_workbench(job: dict) -> dict:
    marks = StepMarks()
    baseline_mb, kernels = run_spec(lambda store: spec(job, store), step_token_marker(marks))
    return {**figures(marks, job, baseline_mb), "note": workbench_note(job, kernels, "LoRA, ")}


# ---------------------------------------------------------------------------------------
# TRL: SFTTrainer with an SFTConfig and a peft LoraConfig


def lora_config():
    """The workbench's LoRA defaults as peft's config."""
    from peft import LoraConfig

    from workbench.models.adapters.lora import LoraAdapterParams

    defaults = LoraAdapterParams(name="lora")
    return LoraConfig(
        r=defaults.r,
        lora_alpha=defaults.alpha,
        lora_dropout=defaults.dropout,
        target_modules=list(defaults.target_modules),
        task_type="CAUSAL_LM",
    )


def trl_config(job: dict, output_dir: str):
    """The job's precision, no gradient checkpointing, the completion-only loss, padding-free
    unless ``job["trl_padding_free"]`` is false. Padding-free without TRL's packing needs
    ``max_length=None`` (TRL refuses to truncate flattened rows); every row fits ``seq``."""
    from trl import SFTConfig

    padding_free = job["trl_padding_free"]
    return SFTConfig(
        **trl_run_settings(job, output_dir),
        per_device_train_batch_size=job["batch"],
        max_length=None if padding_free else job["seq"],
        padding_free=padding_free,
        completion_only_loss=True,
    )


def real_tokens(batch: dict) -> int:
    """The real tokens of a TRL SFT batch: a padding-free batch is one row of real tokens and
    has no attention mask."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def run_trl(job: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    baseline = rss_with_weights_mb(model)
    marks = StepMarks()

    train, _ = train_rows(job["data"], job["eval_fraction"])
    with tempfile.TemporaryDirectory(prefix="vs-trl-out-") as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SFTTrainer(
            model=model,
            args=trl_config(job, output_dir),
            train_dataset=Dataset.from_list(train),
            processing_class=tokenizer,
            peft_config=lora_config(),
        )
        marks.follow(trainer, real_tokens)
        trainer.train()
        args = trainer.args
    out = figures(marks, job, baseline)
    out["note"] = (
        f"{precision_note(args.bf16)}, LoRA, gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}, "
        f"padding-free {'on' if trainer.padding_free else 'off'}"
    )
    return out
