"""What can be chosen in a RunSpec: methods, adapters, optimizers, loss terms.

Pure data, no torch: validation, the CLI, the docs and the widgets read it without
importing training code. A method registers by adding one :class:`MethodInfo` entry; its
LightningModule is named as a lazy ``"module:Class"`` string and imported only to train.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MethodInfo:
    """One fine-tuning method."""

    name: str
    family: str
    summary: str
    formula: str
    paper: str
    module: str  # "package.module:Class", imported lazily by :func:`load_module_class`
    terms: tuple[str, ...]  # loss terms it can weight by objectives' training weights
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AdapterInfo:
    """Which parameters train."""

    name: str
    summary: str
    paper: str = ""


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    summary: str


@dataclass(frozen=True)
class TermInfo:
    """A loss term a method can scalarise; objectives with ``term`` set weight it."""

    name: str
    summary: str


TERMS: dict[str, TermInfo] = {
    t.name: t
    for t in [
        TermInfo("completion", "token NLL over every completion/assistant token"),
        TermInfo("answer", "token NLL over the completion's 'answer' segment (and its end token)"),
        TermInfo("explanation", "token NLL over the completion's 'explanation' segment"),
        TermInfo(
            "brevity",
            "position-weighted NLL of stopping: sum_t (t/T) * -log p(eos | prefix_t) over the "
            "completion, so later positions are pushed harder to end the answer",
        ),
    ]
}

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in [
        MethodInfo(
            name="sft",
            family="supervised",
            summary="Supervised fine-tuning on the completion tokens.",
            formula="L = mean_i mean_{t in completion_i} -log p(y_t | y_<t, x_i)",
            paper="(standard maximum-likelihood fine-tuning)",
            module="workbench.lightning_modules.sft:SFTModule",
            terms=("completion",),
        ),
        MethodInfo(
            name="mo-sft",
            family="multi-objective",
            summary="Multi-objective SFT: loss terms scalarised by the objectives' training weights.",
            formula="L = sum_k w_k * L_k / sum_k w_k, L_k in {answer, explanation, brevity, completion}",
            paper="MORepair: Teaching LLMs to Repair Code via Multi-Objective Fine-tuning (Yang et al., 2024)",
            module="workbench.lightning_modules.sft:MultiObjectiveSFTModule",
            terms=("answer", "explanation", "brevity", "completion"),
        ),
    ]
}

ADAPTERS: dict[str, AdapterInfo] = {
    a.name: a
    for a in [
        AdapterInfo("full", "Every parameter of the base model trains."),
        AdapterInfo(
            "lora",
            "Low-rank adapters (peft) on the attention and MLP projections; the base is frozen.",
            "LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021)",
        ),
    ]
}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    o.name: o
    for o in [
        OptimizerInfo("adamw", "torch.optim.AdamW (decoupled weight decay)."),
        OptimizerInfo("adam", "torch.optim.Adam."),
        OptimizerInfo("sgd", "torch.optim.SGD with momentum."),
    ]
}

SCHEDULERS = ("constant", "linear", "cosine")
KERNEL_CHOICES = ("auto", "triton", "torch", "off")


def choices(table: dict[str, Any]) -> str:
    return ", ".join(sorted(table))


def load_module_class(method: str) -> type:
    """Import the LightningModule class of ``method`` (the only torch-heavy step)."""
    info = METHODS[method]
    module_name, _, class_name = info.module.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
