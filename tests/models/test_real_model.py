"""The real chat model, from its wheel to an exported folder: `model: smollm2-135m-instruct`
is converted once per test session (the `real_model_folder` fixture), trains a few LoRA steps,
and its export loads with transformers alone and gives the trained model's outputs.

About a minute on 2 idle cores, the conversion included.
"""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import torch

from tests.conftest import ROOT
from workbench.models.bases import BUILTIN_BASES
from workbench.running.export import export_run
from workbench.running.pipeline import run
from workbench.spec.run_spec import RunSpec

pytestmark = pytest.mark.slow

REAL = "smollm2-135m-instruct"


def test_the_converted_folder_is_a_plain_llama_with_its_chat_template(real_model_folder):
    from transformers import AutoTokenizer

    config = json.loads((real_model_folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == 30
    assert not (real_model_folder / "config.json").read_text().count("quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(real_model_folder)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    info = json.loads((real_model_folder / "workbench_base.json").read_text())
    assert info["params"] == 134_515_008


def test_models_lists_the_real_model_as_installed_and_cached(real_model_folder):
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "models"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    line = next(li for li in done.stdout.splitlines() if li.startswith(REAL))
    # name, installed, cached, licence, size
    assert line.split()[1:4] == ["yes", "yes", "Apache-2.0"], line
    for name in BUILTIN_BASES:
        assert f"{name}: " in done.stdout  # every entry has its description line


def test_lora_steps_on_the_real_model_export_to_a_folder_transformers_loads_alone(
    real_model_folder, store_uri, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = RunSpec.parse(
        {
            "model": REAL,
            "data": {"source": "addition", "train_size": 16, "eval_size": 4},
            "adapter": {"name": "lora", "r": 8},
            "optimizer": {"name": "adamw", "lr": 0.005},
            "train": {"steps": 3, "batch_size": 4, "max_length": 64, "eval_every": 3},
            "eval": {"max_new_tokens": 4, "samples_logged": 0},
            "tracking": {"experiment": "real-model"},
        }
    )
    result = run(spec, log=lambda *a: None)
    assert result.status == "FINISHED"

    folder = export_run(result.run_id, tmp_path / "exported")
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template, "the export keeps the chat template"
    # The trained model as the run stored it: the base with the run's adapter on top.
    adapter = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="model", dst_path=str(tmp_path / "stored")
    )
    base = AutoModelForCausalLM.from_pretrained(real_model_folder).eval()
    messages = [{"role": "user", "content": "What is 7 + 12? Answer with the number only."}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits  # before peft puts the adapter into it
        trained = PeftModel.from_pretrained(base, adapter).eval()
        stored = trained(input_ids=ids).logits
        merged = exported(input_ids=ids).logits
    scale = stored.abs().max().item()
    # Merging the adapter into the weights only reorders float sums.
    assert (merged - stored).abs().max().item() <= 1e-4 * scale
    # ... and the training moved the model: the export is not the base.
    assert (stored - before).abs().max().item() > 1e-3 * scale
    with torch.no_grad():
        greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(exported.generate(ids, **greedy), trained.generate(ids, **greedy))
