"""`workbench export` of runs trained with adapters other than LoRA: a peft adapter ((IA)3)
and one of the workbench's own (SSF) each come out as a plain model folder, loadable by
transformers alone, with no adapter parameter left and the adapted model's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import fast_spec
from workbench.running.export import export_run
from workbench.running.pipeline import run
from workbench.spec.run_spec import RunSpec


def adapted_model(run_id: str, spec: dict, folder: Path):
    """The run's trained model as it stored it: a peft adapter over the base, or a model
    folder of its own."""
    import mlflow
    from peft import PeftModel

    from workbench.models.loading import load_base, load_pretrained

    stored = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=folder)
    )
    if (stored / "adapter_config.json").is_file():
        base = load_base(RunSpec.parse(spec).model, log=lambda *a: None)
        return PeftModel.from_pretrained(base.model, stored)
    return load_pretrained(str(stored))[0]


@pytest.mark.parametrize(("adapter", "marker"), [("ia3", "ia3_"), ("ssf", "ssf")])
def test_an_adapted_run_exports_a_plain_model_with_the_adapted_outputs(
    adapter, marker, store_uri, tmp_path
):
    from transformers import AutoModelForCausalLM

    spec = fast_spec(
        method="sft",
        adapter={"name": adapter},
        optimizer={"lr": 1e-2},
        train={"steps": 4, "eval_every": 4},
    )
    result = run(spec, log=lambda *a: None)
    folder = export_run(result.run_id, tmp_path / "exported")
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not [n for n, _ in exported.named_parameters() if marker in n]

    adapted = adapted_model(result.run_id, spec, tmp_path / "stored").eval()
    ids = torch.randint(
        3, exported.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        torch.testing.assert_close(
            exported(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )
