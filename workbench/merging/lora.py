"""LoRA adapters as mergeable task vectors, and merging adapters as adapters.

Two ways to merge LoRA adapters trained on one base:

- **Delta space** (every method): each adapter's task vector is its weight change
  ``Delta W = scale * B @ A`` per target module (:func:`lora_deltas`; ``scale = alpha / r``,
  or ``alpha / sqrt(r)`` with rsLoRA), merged like full models' task vectors
  (:func:`workbench.merging.state_dicts.merge_models`). The result is a full model.
- **Factor space** (``linear`` and ``task_arithmetic`` only): the adapters are concatenated
  along the rank, ``A = [A_1; ...; A_K]``, ``B = [w_1 s_1 B_1, ..., w_K s_K B_K]`` with scale 1,
  so ``B @ A = sum_k w_k s_k B_k A_k``: exactly the delta-space merge, kept as one adapter of
  rank ``sum_k r_k`` (:func:`concat_adapters`). Merging the A and B matrices entry by entry
  instead (as some tools do) does not give the merged delta (``(sum B)(sum A)`` has cross
  terms), and sparsifying or sign-electing factors is not the method on the deltas, so the
  other methods merge in delta space only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from workbench.merging.catalog import METHODS

# base_model.model.<module>.lora_A[.<adapter>].weight
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$"
)


def lora_scale(config: Mapping) -> float:
    """The factor LoRA multiplies ``B @ A`` by: alpha / r (alpha / sqrt(r) with rsLoRA)."""
    kind = config.get("peft_type", "LORA")
    if kind != "LORA" or config.get("use_dora"):
        # Their weight change is not scale * B @ A (DoRA rescales each column's norm).
        raise ValueError(
            f"a {'DoRA' if kind == 'LORA' else kind} adapter is not a LoRA task vector "
            "scale * B @ A; the merging lab merges plain LoRA adapters and fully "
            "fine-tuned runs only"
        )
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(
            "adapters with per-module ranks or alphas (rank_pattern/alpha_pattern) "
            "are not supported by the merging lab"
        )
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_factors(adapter: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, tuple]:
    """``{base weight name: (A, B, scale)}`` of an adapter's state dict (peft's saved keys, or a
    peft model's ``state_dict`` keys with the adapter name)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapter.items():
        match = _KEY.match(key)
        if match is None:
            if "lora_" in key:
                raise ValueError(f"adapter weight {key!r}: only LoRA linear layers can be merged")
            continue
        parts.setdefault(match["module"], {})[match["which"]] = value
    scale = lora_scale(config)
    out = {}
    for module, ab in parts.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"adapter module {module!r} lacks its lora_A or lora_B weight")
        out[f"{module}.weight"] = (ab["A"], ab["B"], scale)
    return out


def lora_deltas(adapter: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """``{base weight name: scale * B @ A}`` (float64): an adapter as a task vector."""
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    out = {}
    for name, (a, b, scale) in lora_factors(adapter, config).items():
        delta = scale * (b.double() @ a.double())
        out[name] = delta.T if fan_in_fan_out else delta
    return out


def concat_adapters(
    adapters: Sequence[tuple[Mapping[str, torch.Tensor], Mapping]],
    weights: Sequence[float],
    method: str = "task_arithmetic",
) -> tuple[dict[str, torch.Tensor], dict]:
    """One adapter whose delta is exactly ``method``'s merge of the adapters' deltas
    (``linear``: weights divided by their sum). ``adapters`` are (state dict, config) pairs
    on the same target modules. Returns (state dict in peft's saved key format, config
    changes: ``r`` and ``lora_alpha`` = the summed rank, so the scale is 1)."""
    if not METHODS[method].lora_factors:
        allowed = ", ".join(m.name for m in METHODS.values() if m.lora_factors)
        raise ValueError(
            f"method '{method}' merges LoRA adapters in delta space only; in factor "
            f"space: {allowed}"
        )
    weights = [float(w) for w in weights]
    if METHODS[method].normalize:
        total = sum(weights)
        weights = [w / total for w in weights]
    factor_sets = [lora_factors(state, config) for state, config in adapters]
    modules = set(factor_sets[0])
    if any(set(f) != modules for f in factor_sets[1:]):
        raise ValueError("the adapters target different modules; merge them in delta space")
    state, rank = {}, None
    for name in factor_sets[0]:
        a = torch.cat([f[name][0] for f in factor_sets], dim=0)
        b = torch.cat([w * f[name][2] * f[name][1] for w, f in zip(weights, factor_sets)], dim=1)
        module = name[: -len(".weight")]
        state[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        state[f"base_model.model.{module}.lora_B.weight"] = b.to(
            factor_sets[0][name][1].dtype
        ).contiguous()
        rank = a.shape[0]
    return state, {"r": rank, "lora_alpha": rank, "use_rslora": False}


def read_adapter(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of a saved peft adapter folder (safetensors only)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has no adapter_model.safetensors")
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return load_file(str(weights)), config


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()
