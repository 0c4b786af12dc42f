"""From a user's JSONL file and a model folder, end to end, the workbench follows TRL's trainers.

The workbench side is a plain ``workbench.run(spec)``: its own reading of the file, its held-out
split, its encoding and its batches (not TRL's tokens, unlike test_preference_vs_trl.py). The
model folder is a small random Llama saved with ``save_pretrained`` next to SmolLM2's tokenizer
(no BOS on plain text, ``<|im_end|>`` as end and pad token). Both sides train 5 full-batch
steps of AdamW (lr 1e-3, constant, no weight decay, clipping at 1) in float32.

How the held-out split is aligned: the workbench holds out ``data.eval_fraction`` of the file
(one row of 8, by a seeded shuffle); TRL is given exactly the training rows the workbench kept,
read with the workbench's own ``split_rows`` and the run's seed. The spec asks for a batch of 8,
as a user with 8 rows would: more than the 7 rows kept, so each step trains on all 7 (as TRL's
batch of 8 over 7 rows does).
"""

from __future__ import annotations

import json
import warnings

import pytest

import workbench
from workbench.data.formats import split_rows
from workbench.running.events import RunObserver

pytestmark = pytest.mark.slow
trl = pytest.importorskip("trl")

STEPS, LR, BATCH, SEED, EVAL_FRACTION = 5, 1e-3, 8, 0, 0.1
TOLERANCE = 2e-3

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " London."},
    {"prompt": "Name a primary colour.", "chosen": " Red.", "rejected": " Green, or purple."},
    {"prompt": "How many legs does a spider have?", "chosen": " Eight.", "rejected": " Six."},
    {"prompt": "What is 2 + 2?", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Which planet is red?", "chosen": " Mars.", "rejected": " Venus, I think."},
    {"prompt": "Say hello politely.", "chosen": " Hello, nice to meet you.", "rejected": " What?"},
    {"prompt": "What do bees make?", "chosen": " Honey.", "rejected": " Milk."},
    {"prompt": "Opposite of hot?", "chosen": " Cold.", "rejected": " Warm and sunny."},
]
# SFT rows whose completions are all one token (and the end token): the workbench averages
# the NLL per row, then over rows (the paper's form, docs/concepts.md), TRL over the batch's
# completion tokens; with equal completion lengths the two are the same number.
COMPLETIONS = [" Paris", " Red", " Eight", " Four", " Mars", " Hello", " Honey", " Cold"]
SFT_ROWS = [{"prompt": p["prompt"], "completion": c} for p, c in zip(PAIRS, COMPLETIONS)]


@pytest.fixture(scope="module")
def model_folder(real_model_folder, tmp_path_factory):
    """A 2-layer random Llama over SmolLM2's tokenizer, saved as a user's model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(real_model_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("user-model")
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _jsonl(tmp_path, records) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _workbench_losses(model_folder, data, method: dict, store_uri) -> list[float]:
    losses: list[float] = []

    class Losses(RunObserver):
        def on_step(self, step, metrics):
            losses.append(metrics["train/loss"])

    spec = {
        "model": {"name": str(model_folder)},
        "data": {"source": data, "eval_fraction": EVAL_FRACTION, "eval_size": 1},
        "method": method,
        "optimizer": {"name": "adamw", "lr": LR, "weight_decay": 0.0},
        "objectives": [{"name": "loss", "direction": "min", "source": "metric:eval_loss"}],
        "train": {"steps": STEPS, "batch_size": BATCH, "max_length": 64, "eval_every": STEPS,
                  "log_every": 1, "scheduler": "constant", "grad_clip": 1.0,
                  "precision": "32-true", "seed": SEED},
        "eval": {"batch_size": BATCH, "samples_logged": 0, "max_new_tokens": 1},
        "kernels": "off",
        "tracking": {"uri": store_uri, "experiment": "vs-trl", "log_model": False},
    }  # fmt: skip
    workbench.run(spec, log=lambda *a: None, observers=[Losses()])
    return losses


def _trl_losses(trainer_class, config_class, model_folder, records, tmp_path, **extra):
    """TRL's per-step losses on the rows the workbench trained on (its split, its seed)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    kept, _ = split_rows(records, EVAL_FRACTION, seed=SEED)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    config = config_class(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=BATCH, max_steps=STEPS,
        max_length=64, learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0,
        weight_decay=0.0, seed=SEED, use_cpu=True, bf16=False, gradient_checkpointing=False,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        dataloader_pin_memory=False, **extra,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(
            model=AutoModelForCausalLM.from_pretrained(model_folder),
            args=config,
            train_dataset=Dataset.from_list(kept),
            processing_class=AutoTokenizer.from_pretrained(model_folder),
            callbacks=[Losses()],
        )
        trainer.train()
    return losses


def test_dpo_from_a_user_file_follows_dpotrainer(model_folder, tmp_path, store_uri):
    from trl import DPOConfig, DPOTrainer

    ours = _workbench_losses(
        model_folder, _jsonl(tmp_path, PAIRS), {"name": "dpo", "beta": 0.1}, store_uri
    )
    theirs = _trl_losses(
        DPOTrainer, DPOConfig, model_folder, PAIRS, tmp_path,
        beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=True,
    )  # fmt: skip
    assert len(ours) == len(theirs) == STEPS
    assert ours[-1] < ours[0] - 0.01  # it trains: the comparison is not of flat curves
    assert ours == pytest.approx(theirs, abs=TOLERANCE)


def test_sft_from_a_user_file_follows_sfttrainer(model_folder, tmp_path, store_uri):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    lengths = {
        len(tokenizer(row["completion"], add_special_tokens=False)["input_ids"]) for row in SFT_ROWS
    }
    assert lengths == {1}, "the rows must have equal completion lengths (see COMPLETIONS)"
    ours = _workbench_losses(model_folder, _jsonl(tmp_path, SFT_ROWS), {"name": "sft"}, store_uri)
    theirs = _trl_losses(SFTTrainer, SFTConfig, model_folder, SFT_ROWS, tmp_path)
    assert len(ours) == len(theirs) == STEPS
    assert ours[-1] < ours[0] - 0.01
    assert ours == pytest.approx(theirs, abs=TOLERANCE)
