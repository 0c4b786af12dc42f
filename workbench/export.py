"""Export a finished run as a plain model folder: merged weights (safetensors) + tokenizer."""

from __future__ import annotations

import tempfile
from pathlib import Path

from workbench import tracking
from workbench.errors import TrackingError
from workbench.models import load_base, load_pretrained, save_merged
from workbench.spec import RunSpec


def export_run(run_id: str, folder: str | Path, *, uri: str | None = None) -> Path:
    """Write ``from_pretrained``-loadable weights of ``run_id`` to ``folder``."""
    import mlflow

    client = tracking.connect(uri)
    try:
        client.get_run(run_id)
    except Exception as err:  # MLflow's own exception types
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            spec_file = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="spec.yaml",
                                                            dst_path=tmp, tracking_uri=client.tracking_uri)
            model_dir = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model",
                                                            dst_path=tmp, tracking_uri=client.tracking_uri)
        except Exception as err:
            raise TrackingError(
                f"run {run_id} has no saved model (was tracking.log_model false, or did it not finish?): {err}"
            ) from None
        spec = RunSpec.from_file(spec_file)
        if (Path(model_dir) / "adapter_config.json").is_file():
            from peft import PeftModel

            base = load_base(spec.model, log=lambda *a: None)
            model = PeftModel.from_pretrained(base.model, model_dir)
            tokenizer = base.tokenizer
        else:
            model, tokenizer = load_pretrained(model_dir)
        return save_merged(model, tokenizer, folder)
