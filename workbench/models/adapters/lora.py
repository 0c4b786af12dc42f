"""LoRA through peft: low-rank adapters on the named projections; the base is frozen.

Its options, all peft's: rsLoRA's scaling (alpha / sqrt(r)), DoRA's magnitude and direction
split, and the initialisations of the adapter's two factors: gaussian (peft's default: A
random, B zero), PiSSA and OLoRA (the weight's principal singular vectors, or a QR
decomposition, moved into the adapter: the base keeps the residual), EVA (A from the
singular vectors of the layers' inputs on a few training rows) and CorDA (the weight
decomposed along the covariance of the layers' inputs on a few training rows, the base keeps
the residual). EVA and CorDA read data: the run passes a small calibration set of its
training rows (:func:`apply_lora`'s ``calibration``).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Literal

from pydantic import Field

from workbench.models.adapters.peft_wrapping import DECODER_PROJECTIONS, present_targets, wrap
from workbench.spec.entries import AdapterParams

# Initialisations that rewrite the base's weights (the adapter starts as a slice of them):
# switching the adapter off then gives the residual, not the base.
REWRITES_BASE = ("pissa", "olora", "corda")
# Initialisations that read the layers' inputs on calibration rows.
READS_DATA = ("eva", "corda")
# The attribute of an adapted model that holds the folder of its adapter as initialised (see
# ``initial_adapter_folder``), for saving it as a plain LoRA adapter of the unchanged base.
INITIAL_ADAPTER = "workbench_initial_adapter"


class LoraAdapterParams(AdapterParams):
    """LoRA (peft ``LoraConfig``): ``W x + (alpha / r) B A x`` on each target module."""

    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DECODER_PROJECTIONS),
        description="Module names that get adapters.",
    )
    use_rslora: bool = Field(
        False,
        description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r (stable at high rank).",
    )
    use_dora: bool = Field(
        False,
        description="DoRA: learn each weight's magnitude apart from its LoRA-updated direction.",
    )
    init: Literal["gaussian", "pissa", "olora", "eva", "corda"] = Field(
        "gaussian",
        description="How A and B start: gaussian (B = 0), pissa, olora (from the weight), "
        "eva, corda (from the layers' inputs on a few training rows).",
    )
    corda_method: Literal["ipm", "kpm"] = Field(
        "ipm",
        description="CorDA only: ipm adapts the task's principal directions, kpm keeps "
        "them (knowledge-preserved) and adapts the smallest.",
    )

    def works_with_fused_head(self) -> bool:
        return "lm_head" not in self.target_modules

    def can_be_disabled(self) -> bool:
        # PiSSA, OLoRA and CorDA leave the base holding a residual: off is not the base.
        return self.init not in REWRITES_BASE

    def needs_calibration(self) -> bool:
        return self.init in READS_DATA


def apply_lora(model, params: LoraAdapterParams, calibration=None):
    """A peft LoRA model on the target modules present in ``model``; the base is frozen.

    ``calibration``: batches (``input_ids``, ``attention_mask``) of the run's training rows
    that EVA and CorDA read. Without it those two set up the adapter's shape only (gaussian
    factors): what loading trained weights over it needs.
    """
    from peft import EvaConfig, LoraConfig
    from peft.tuners.lora.config import CordaConfig

    init = params.init
    if init in READS_DATA and calibration is None:
        init = "gaussian"
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=present_targets(model, params.target_modules),
        use_rslora=params.use_rslora,
        use_dora=params.use_dora,
        init_lora_weights=True if init == "gaussian" else init,
        # rho 1: every module keeps rank r (no redistribution), so a checkpoint of the run
        # loads into the adapter's shape without its calibration rows.
        eva_config=EvaConfig(rho=1.0) if init == "eva" else None,
        corda_config=CordaConfig(corda_method=params.corda_method) if init == "corda" else None,
    )
    if init == "corda":
        from peft.tuners.lora.corda import preprocess_corda

        preprocess_corda(model, config, run_model=lambda: _run_rows_singly(model, calibration))
    adapted = wrap(model, config)
    if init == "eva":
        from peft import initialize_lora_eva_weights

        initialize_lora_eva_weights(adapted, calibration, show_progress_bar=False)
    if init in REWRITES_BASE:
        setattr(adapted, INITIAL_ADAPTER, initial_adapter_folder(adapted))
    return adapted


def _run_rows_singly(model, calibration) -> None:
    """CorDA's covariance hooks take one unpadded row per forward pass."""
    import torch

    with torch.no_grad():
        for batch in calibration:
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                model(input_ids=ids[mask.bool()][None])


def initial_adapter_folder(adapted) -> str:
    """Save the adapter as initialised, as peft's conversion reads it (its init set to plain
    LoRA), to a temporary folder removed with the model; returns the folder.

    PiSSA, OLoRA and CorDA rewrite the base, so the trained factors alone do not apply to the
    unchanged base; saved with this folder (``path_initial_model_for_weight_conversion``),
    peft writes the difference as a plain LoRA adapter of rank 2r that does.
    """
    parent = tempfile.mkdtemp(prefix="workbench-initial-adapter-")
    weakref.finalize(adapted, shutil.rmtree, parent, ignore_errors=True)
    folder = Path(parent) / "initial"
    config = adapted.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        adapted.save_pretrained(folder, safe_serialization=True)
    finally:
        config.init_lora_weights = init
    return str(folder)
