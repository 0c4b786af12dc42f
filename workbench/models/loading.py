"""Base models: a built-in base (:mod:`.bases`), or any causal LM from a folder or a hub id.

Loading is safe by default: only safetensors weights, and no code shipped with a model runs
unless the spec says so (``model.allow_unsafe_weights``, ``model.trust_remote_code``).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from workbench.models.adapters.peft_wrapping import can_merge
from workbench.models.base_model import BaseModel
from workbench.models.bases import BUILTIN_BASES
from workbench.spec.errors import ModelError

MODEL_NAMES = (
    f"a built-in base ({', '.join(BUILTIN_BASES)}; `workbench models` lists them), a local "
    "folder with config.json and .safetensors weights, or a hub id owner/name"
)


def looks_like_folder(name: str) -> bool:
    """A local folder rather than 'tiny' or a hub id ``owner/name``."""
    return (
        name.startswith((".", "~", "/", "\\"))
        or os.path.isabs(name)
        or "\\" in name
        or name.count("/") >= 2
    )


def missing_model(name: str) -> str | None:
    """Why ``model.name`` names a folder this machine does not have, or None.

    Only path-shaped names are judged here; a hub id is the hub's to answer.
    """
    if name in BUILTIN_BASES:
        return None
    path = Path(name).expanduser()
    if path.exists():
        return None
    if "/" not in name and "\\" not in name:
        # Neither a folder nor owner/name: most likely a built-in base's name mistyped.
        close = difflib.get_close_matches(name, list(BUILTIN_BASES), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"no built-in base is called '{name}'; {hint}model.name accepts {MODEL_NAMES}"
    if not looks_like_folder(name):
        return None
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return f"model folder not found: '{name}'{where}; model.name accepts {MODEL_NAMES}"


def load_base(model_spec, log=print) -> BaseModel:
    """The base model and tokenizer named by ``model_spec``
    (a :class:`~workbench.spec.run_spec.ModelSpec`)."""
    builtin = BUILTIN_BASES.get(model_spec.name)
    if builtin is not None:
        return builtin.load(model_spec, log=log)
    model, tokenizer = load_pretrained(
        model_spec.name,
        trust_remote_code=model_spec.trust_remote_code,
        allow_unsafe_weights=model_spec.allow_unsafe_weights,
        revision=model_spec.revision,
    )
    return BaseModel(model, tokenizer, model_spec.name, {})


def load_pretrained(
    name: str,
    *,
    trust_remote_code: bool = False,
    allow_unsafe_weights: bool = False,
    revision: str | None = None,
):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` with the workbench's safety defaults."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    missing = missing_model(name)
    if missing is not None:
        raise ModelError(f"cannot load model: {missing}")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"model '{name}' is a file; pass the folder holding config.json and the weights"
            )
        has_safetensors = any(path.glob("*.safetensors"))
        has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
        if not has_safetensors and has_pickle and not allow_unsafe_weights:
            raise ModelError(
                f"model folder '{name}' has only pickle (.bin/.pt) weights, "
                "which can run code when loaded; convert them to safetensors, "
                "or set model.allow_unsafe_weights: true if you trust the source"
            )
        name = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, trust_remote_code=trust_remote_code, revision=revision
        )
        model = AutoModelForCausalLM.from_pretrained(
            name,
            trust_remote_code=trust_remote_code,
            revision=revision,
            use_safetensors=None if allow_unsafe_weights else True,
        )
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Repo id must be" in first or "repo_id" in first:
            first = "it is neither a local folder nor a hub id"
        raise ModelError(
            f"cannot load model '{name}': {first}. model.name accepts 'tiny', a local folder "
            "with config.json, tokenizer files and .safetensors weights, or a hub id owner/name "
            "reachable from this machine"
        ) from None
    if tokenizer.pad_token_id is None:
        # Batched training and generation need a pad id; the end token is the usual stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    model.train()
    return model, tokenizer


def save_merged(model, tokenizer, folder: str | Path) -> Path:
    """Save a plain ``from_pretrained``-loadable model: adapters merged, safetensors weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        if not can_merge(model):
            raise ModelError(
                "this model's adapter (prompt or prefix tuning) cannot be merged into the "
                "base's weights: save it with its own save_pretrained (an adapter folder)"
            )
        model = model.merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
