"""Export a run as a plain model folder: merged weights (safetensors) + tokenizer.

A finished run exports the weights it stored in MLflow; a run that stopped before that
(failed, killed) exports its last training checkpoint, a sharded one (FSDP) merged into
one full model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from workbench import tracking
from workbench.models.adapters.applying import apply_adapter, merge_adapter
from workbench.models.loading import load_base, load_pretrained, save_merged
from workbench.running import checkpoints
from workbench.spec import paths
from workbench.spec.errors import TrackingError, WorkbenchError
from workbench.spec.run_spec import RunSpec


def export_run(run_id: str, folder: str | Path, *, uri: str | None = None) -> Path:
    """Write ``from_pretrained``-loadable weights of ``run_id`` to ``folder``."""
    import mlflow

    client = tracking.connect(uri)
    try:
        client.get_run(run_id)
    except Exception as err:  # MLflow's own exception types
        raise TrackingError(f"no run {run_id} in the store {client.tracking_uri}: {err}") from None
    with tempfile.TemporaryDirectory() as tmp:

        def download(artifact: str) -> str:
            return mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact,
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )

        try:
            spec = RunSpec.from_file(download("spec.yaml"))
        except Exception as err:  # MLflow's own exception types
            raise TrackingError(f"run {run_id} has no stored spec.yaml: {err}") from None
        check_mergeable(spec, run_id)
        try:
            model_dir = download("model")
        except Exception as err:
            ckpt = checkpoints.last(paths.checkpoint_dir(client.tracking_uri) / run_id)
            if ckpt is None:
                raise TrackingError(
                    f"run {run_id} has no saved model and no checkpoint "
                    "(was tracking.log_model false, "
                    f"or did it stop before its first train.checkpoint_every steps?): {err}"
                ) from None
            return export_checkpoint(spec, ckpt, folder)
        if (Path(model_dir) / "adapter_config.json").is_file():
            from peft import PeftModel

            base = load_base(spec.model, log=lambda *a: None)
            model = PeftModel.from_pretrained(base.model, model_dir)
            tokenizer = base.tokenizer
        else:
            model, tokenizer = load_pretrained(model_dir)
        return save_merged(model, tokenizer, folder)


def check_mergeable(spec: RunSpec, run_id: str) -> None:
    """Refuse, before anything is loaded, a run whose adapter cannot fold into the base's
    weights (prompt and prefix tuning: their virtual tokens are inputs, not a weight change)."""
    if not spec.adapter.merges_into_weights():
        raise WorkbenchError(
            f"run {run_id}: adapter '{spec.adapter.name}' cannot be merged into the base's "
            "weights (its learned virtual tokens are extra inputs, not a change of the "
            "weights), so it has no plain-model export; load the run's adapter (its 'model' "
            "artifact) over the base with peft.PeftModel.from_pretrained instead"
        )


def export_checkpoint(spec: RunSpec, checkpoint: Path, folder: str | Path) -> Path:
    """The model of ``spec`` with the weights of a training checkpoint (one file, or a folder
    of shards merged here), adapters merged, written to ``folder``."""
    check_mergeable(spec, checkpoint.parent.name)
    base = load_base(spec.model, log=lambda *a: None)
    model = apply_adapter(base.model, spec.adapter)
    model.load_state_dict(checkpoints.model_state(checkpoint))
    return save_merged(merge_adapter(model, spec.adapter), base.tokenizer, folder)
