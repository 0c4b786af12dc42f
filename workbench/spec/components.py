"""The components a run is built from beside its method: adapters (which parameters train),
optimizers, learning-rate schedules and data selectors (which training rows it keeps), each
a table of registered entries.

An entry is what a method's entry is: a name, a one-line summary, a pydantic settings model
(the spec's section, e.g. ``optimizer: {name: sgd, lr: 0.05, momentum: 0.5}``, with the
shorthand ``optimizer: sgd``) and the code it runs, named as a lazy ``"module:function"``
(or given as the function itself, as a notebook does). Code that uses a component looks it
up here; it never branches on names. Built-in entries and a user's register the same way,
through :func:`register_adapter`, :func:`register_optimizer`, :func:`register_schedule` and
:func:`register_selector` (exported from ``workbench``).

Declarations only, no torch: validating a spec never imports training code.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from workbench.data.selection.confidence import ConfidenceParams
from workbench.data.selection.distribution_matching import DistributionMatchingParams
from workbench.data.selection.diversity import DiversityParams
from workbench.data.selection.donod import DonodParams
from workbench.data.selection.online_batch import OnlineBatchParams
from workbench.data.selection.random_choice import RandomParams
from workbench.data.selection.s2l import S2LParams
from workbench.models.adapters.full import FullAdapterParams
from workbench.models.adapters.hft import HftAdapterParams
from workbench.models.adapters.ia3 import Ia3AdapterParams
from workbench.models.adapters.lift import LiftAdapterParams
from workbench.models.adapters.lisa import LisaAdapterParams
from workbench.models.adapters.loha import LohaAdapterParams
from workbench.models.adapters.lokr import LokrAdapterParams
from workbench.models.adapters.lora import LoraAdapterParams
from workbench.models.adapters.prefix_tuning import PrefixTuningAdapterParams
from workbench.models.adapters.prompt_tuning import PromptTuningAdapterParams
from workbench.models.adapters.sparse import SparseAdapterParams
from workbench.models.adapters.ssf import SsfAdapterParams
from workbench.models.adapters.vera import VeraAdapterParams
from workbench.spec.entries import (
    AdapterInfo,
    AdapterParams,
    OptimizerInfo,
    OptimizerParams,
    Ref,
    ScheduleParams,
    SchedulerInfo,
    SelectorInfo,
    SelectorParams,
)
from workbench.spec.registration import check_new_name

# -- the built-in optimizers' settings ---------------------------------------------------------


class AdamParams(OptimizerParams):
    """Settings of Adam and AdamW (``torch.optim.Adam``/``AdamW``)."""

    weight_decay: float = Field(
        0.0, ge=0, le=1, description="Weight decay (decoupled from the gradient for AdamW)."
    )
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="Decay rates of the first and second moment estimates."
    )
    eps: float = Field(1e-8, gt=0, le=1, description="Added to the denominator for stability.")
    fused: bool | None = Field(
        None,
        description="torch's fused kernel (one pass over each parameter, no temporaries the "
        "size of the model). Default: fused on CPU, where it was measured faster, unless a "
        "mixed precision clips gradients (Lightning clips no fused optimizer's gradients "
        "there); torch's own choice elsewhere.",
    )

    def check_train(self, train: Any) -> None:
        if self.fused and _clips_mixed_precision(train):
            raise ValueError(
                f"optimizer.fused: true with train.precision {train.precision} and "
                f"train.grad_clip {train.grad_clip}: Lightning does not clip a fused "
                "optimizer's gradients under mixed precision (the fused step unscales them "
                "itself); set optimizer.fused: false, or train.grad_clip: null, or "
                "train.precision: 32-true"
            )

    def for_train(self, train: Any) -> AdamParams:
        if self.fused is None and _clips_mixed_precision(train):
            return self.model_copy(update={"fused": False})
        return self


def _clips_mixed_precision(train: Any) -> bool:
    return str(train.precision).endswith("-mixed") and bool(train.grad_clip)


class SGDParams(OptimizerParams):
    """Settings of stochastic gradient descent with momentum (``torch.optim.SGD``)."""

    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty added to the gradient.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum factor (0: plain SGD).")


class MezoParams(OptimizerParams):
    """Settings of MeZO, zeroth-order SGD (``workbench.running.mezo.MeZO``): two forward
    passes per step at ``theta +/- eps z``, no backward."""

    eps: float = Field(
        1e-3, gt=0, le=1, description="Perturbation scale of the two forward passes."
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty added to the estimate.")

    def check_train(self, train: Any) -> None:
        if train.grad_accum != 1:
            raise ValueError(
                f"train.grad_accum = {train.grad_accum}: optimizer mezo takes one step per "
                "micro-batch; set train.grad_accum: 1 and a larger train.batch_size instead"
            )


# -- the tables --------------------------------------------------------------------------------

ADAPTERS_PACKAGE = "workbench.models.adapters"

ADAPTERS: dict[str, AdapterInfo] = {
    a.name: a
    for a in [
        AdapterInfo(
            "full",
            "Every parameter of the base model trains.",
            FullAdapterParams,
            "workbench.models.adapters.full:apply_full",
            builtin=True,
        ),
        AdapterInfo(
            "lora",
            "Low-rank adapters (peft) on the attention and MLP projections; the base is frozen.",
            LoraAdapterParams,
            "workbench.models.adapters.lora:apply_lora",
            "LoRA: Low-Rank Adaptation of Large Language Models (Hu et al., 2021); options: "
            "rsLoRA (Kalajdzievski, 2023), DoRA (Liu et al., 2024), PiSSA (Meng et al., 2024), "
            "OLoRA (Büyükakyüz, 2024), EVA (Paischer et al., 2024), CorDA (Yang et al., 2024)",
            builtin=True,
        ),
        AdapterInfo(
            "ia3",
            "(IA)3 (peft): learned vectors rescale the keys, values and MLP activations.",
            Ia3AdapterParams,
            f"{ADAPTERS_PACKAGE}.ia3:apply_ia3",
            "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context "
            "Learning (Liu et al., 2022)",
            builtin=True,
        ),
        AdapterInfo(
            "loha",
            "LoHa (peft): weight changes as Hadamard products of two low-rank products.",
            LohaAdapterParams,
            f"{ADAPTERS_PACKAGE}.loha:apply_loha",
            "FedPara: Low-Rank Hadamard Product for Communication-Efficient Federated "
            "Learning (Hyeon-Woo et al., 2022)",
            builtin=True,
        ),
        AdapterInfo(
            "lokr",
            "LoKr (peft): weight changes as Kronecker products of a small and a low-rank matrix.",
            LokrAdapterParams,
            f"{ADAPTERS_PACKAGE}.lokr:apply_lokr",
            "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model "
            "Evaluation (Yeh et al., 2024)",
            builtin=True,
        ),
        AdapterInfo(
            "vera",
            "VeRA (peft): frozen random matrices shared by all layers, trained scaling vectors.",
            VeraAdapterParams,
            f"{ADAPTERS_PACKAGE}.vera:apply_vera",
            "VeRA: Vector-based Random Matrix Adaptation (Kopiczko et al., 2024)",
            builtin=True,
        ),
        AdapterInfo(
            "prompt_tuning",
            "Prompt tuning (peft): learned embeddings of virtual tokens before each sequence.",
            PromptTuningAdapterParams,
            f"{ADAPTERS_PACKAGE}.prompt_tuning:apply_prompt_tuning",
            "The Power of Scale for Parameter-Efficient Prompt Tuning (Lester et al., 2021)",
            builtin=True,
        ),
        AdapterInfo(
            "prefix_tuning",
            "Prefix tuning (peft): learned keys and values of virtual tokens at every layer.",
            PrefixTuningAdapterParams,
            f"{ADAPTERS_PACKAGE}.prefix_tuning:apply_prefix_tuning",
            "Prefix-Tuning: Optimizing Continuous Prompts for Generation (Li and Liang, 2021)",
            builtin=True,
        ),
        AdapterInfo(
            "hft",
            "Half Fine-Tuning: half of each block's parameter groups train per stage, a new "
            "half each stage (theta_g moves only for g in H_s, s = floor(t / stage_steps)).",
            HftAdapterParams,
            f"{ADAPTERS_PACKAGE}.hft:apply_hft",
            "HFT: Half Fine-Tuning for Large Language Models (Hui et al., 2024)",
            builtin=True,
            schedule=f"{ADAPTERS_PACKAGE}.hft:hft_schedule",
        ),
        AdapterInfo(
            "lisa",
            "LISA: embeddings and head always train; every K steps a new random gamma of the "
            "decoder layers trains (theta_l moves only for l in S_p, p = floor(t / K)).",
            LisaAdapterParams,
            f"{ADAPTERS_PACKAGE}.lisa:apply_lisa",
            "LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model "
            "Fine-Tuning (Pan et al., 2024)",
            builtin=True,
            schedule=f"{ADAPTERS_PACKAGE}.lisa:lisa_schedule",
        ),
        AdapterInfo(
            "lift",
            "LIFT-style principal weights: only the top-k% entries of |W_r| (W's rank-r SVD "
            "truncation) train (W <- W - lr * (M * u(W))).",
            LiftAdapterParams,
            f"{ADAPTERS_PACKAGE}.lift:apply_lift",
            "LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction for "
            "Reasoning-Focused Supervised Fine-Tuning (Liu et al., 2025)",
            builtin=True,
        ),
        AdapterInfo(
            "ssf",
            "SSF: a trainable per-channel scale and shift after the chosen linear layers "
            "(y' = gamma * (W x + b) + beta), merged into W and b after training.",
            SsfAdapterParams,
            f"{ADAPTERS_PACKAGE}.ssf:apply_ssf",
            "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning "
            "(Lian et al., 2022)",
            builtin=True,
            merge=f"{ADAPTERS_PACKAGE}.ssf:merge_ssf",
        ),
        AdapterInfo(
            "sparse",
            "Sparse fine-tuning: a fixed density of each target weight's entries, chosen at "
            "random or by magnitude, trains (W <- W - lr * (M * u(W))).",
            SparseAdapterParams,
            f"{ADAPTERS_PACKAGE}.sparse:apply_sparse",
            "Training Neural Networks with Fixed Sparse Masks (Sung et al., 2021)",
            builtin=True,
        ),
    ]
}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    o.name: o
    for o in [
        OptimizerInfo(
            "adamw",
            "torch.optim.AdamW (decoupled weight decay).",
            AdamParams,
            "workbench.running.optimizers:build_adamw",
            builtin=True,
        ),
        OptimizerInfo(
            "adam",
            "torch.optim.Adam.",
            AdamParams,
            "workbench.running.optimizers:build_adam",
            builtin=True,
        ),
        OptimizerInfo(
            "sgd",
            "torch.optim.SGD with momentum.",
            SGDParams,
            "workbench.running.optimizers:build_sgd",
            builtin=True,
        ),
        OptimizerInfo(
            "mezo",
            "MeZO: zeroth-order SGD, g = (L(theta + eps z) - L(theta - eps z)) / (2 eps) * z "
            "with z ~ N(0, I) re-drawn from a seed; two forward passes, no backward.",
            MezoParams,
            "workbench.running.optimizers:build_mezo",
            builtin=True,
            trains_without_backward=True,
        ),
    ]
}

SCHEDULERS: dict[str, SchedulerInfo] = {
    s.name: s
    for s in [
        SchedulerInfo(
            "constant",
            "the peak rate throughout (after warm-up)",
            ScheduleParams,
            "workbench.running.schedules:constant",
            builtin=True,
        ),
        SchedulerInfo(
            "linear",
            "linear decay to 0 at the last step",
            ScheduleParams,
            "workbench.running.schedules:linear",
            builtin=True,
        ),
        SchedulerInfo(
            "cosine",
            "half a cosine from the peak to 0",
            ScheduleParams,
            "workbench.running.schedules:cosine",
            builtin=True,
        ),
    ]
}

SELECTION = "workbench.data.selection"

SELECTORS: dict[str, SelectorInfo] = {
    s.name: s
    for s in [
        SelectorInfo(
            "random",
            "a uniform random sample: the baseline",
            RandomParams,
            f"{SELECTION}.random_choice:select_random",
            builtin=True,
        ),
        SelectorInfo(
            "diversity",
            "k-means over the base model's embeddings, the budget shared across clusters",
            DiversityParams,
            f"{SELECTION}.diversity:select_diverse",
            "Diversity Measurement and Subset Selection for Instruction Tuning Datasets "
            "(Wang et al., 2024)",
            builtin=True,
        ),
        SelectorInfo(
            "s2l",
            "cluster a briefly trained proxy's loss trajectories, sample across clusters",
            S2LParams,
            f"{SELECTION}.s2l:select_s2l",
            "SmallToLarge (S2L): Scalable Data Selection for Fine-tuning Large Language Models "
            "by Summarizing Training Trajectories of Small Models (Yang et al., 2024)",
            builtin=True,
        ),
        SelectorInfo(
            "confidence",
            "drop rows whose completion the model confidently finds implausible",
            ConfidenceParams,
            f"{SELECTION}.confidence:select_confident",
            "Automated Data Curation for Robust Language Model Fine-Tuning (CLEAR; Chen and "
            "Mueller, 2024)",
            builtin=True,
        ),
        SelectorInfo(
            "donod",
            "rank rows by how one step on each moves the weights (TOPSIS over DON and NOD)",
            DonodParams,
            f"{SELECTION}.donod:select_donod",
            "DONOD: Efficient and Generalizable Instruction Fine-Tuning for LLMs via "
            "Model-Intrinsic Dataset Pruning (2025)",
            builtin=True,
        ),
        SelectorInfo(
            "distribution-matching",
            "greedily pick rows that bring the set's embeddings closest (MMD) to a target sample",
            DistributionMatchingParams,
            f"{SELECTION}.distribution_matching:select_matching",
            "Get more for less: Principled Data Selection for Warming Up Fine-Tuning in LLMs "
            "(Kang et al., 2024)",
            builtin=True,
        ),
        SelectorInfo(
            "online-batch",
            "pick each proxy batch from a larger pool by loss and diversity, until the budget",
            OnlineBatchParams,
            f"{SELECTION}.online_batch:select_online",
            "Prioritized Training on Points that are Learnable, Worth Learning, and Not Yet "
            "Learnt (Mindermann et al., 2022); Diversified Batch Selection for Training "
            "Acceleration (Hong et al., 2024)",
            builtin=True,
        ),
    ]
}


# -- registration ------------------------------------------------------------------------------


def register_adapter(
    name: str,
    *,
    apply: Ref,
    params: type[AdapterParams] | None = None,
    summary: str = "",
    paper: str = "",
) -> AdapterInfo:
    """Register an adapter (which parameters train) under ``name``.

    ``apply`` is ``(model, settings) -> the model to train`` (or ``"package.module:function"``);
    ``params`` an :class:`AdapterParams` subclass with its settings (the spec's
    ``adapter: {name: ..., <field>: ...}``). Registering a name again replaces a user
    adapter (re-running a cell); built-in adapters cannot be replaced.
    """
    check_new_name(name, ADAPTERS, "adapter")
    info = AdapterInfo(
        name=name,
        summary=summary or f"user adapter '{name}'",
        params=_settings_model(params, AdapterParams, "adapter"),
        apply=apply,
        paper=paper,
    )
    ADAPTERS[name] = info
    return info


def register_optimizer(
    name: str,
    *,
    build: Ref,
    params: type[OptimizerParams] | None = None,
    summary: str = "",
) -> OptimizerInfo:
    """Register an optimizer under ``name``.

    ``build`` is ``(trainable parameters, settings) -> torch.optim.Optimizer`` (or
    ``"package.module:function"``); ``params`` an :class:`OptimizerParams` subclass with its
    settings beside ``lr`` (the spec's ``optimizer: {name: ..., lr: ..., <field>: ...}``).
    Registering a name again replaces a user optimizer; built-in ones cannot be replaced.
    """
    check_new_name(name, OPTIMIZERS, "optimizer")
    info = OptimizerInfo(
        name=name,
        summary=summary or f"user optimizer '{name}'",
        params=_settings_model(params, OptimizerParams, "optimizer"),
        build=build,
    )
    OPTIMIZERS[name] = info
    return info


def register_schedule(
    name: str,
    *,
    factor: Ref,
    params: type[ScheduleParams] | None = None,
    summary: str = "",
) -> SchedulerInfo:
    """Register a learning-rate schedule under ``name``.

    ``factor`` is ``(step, warmup_steps, total_steps, **settings) -> multiplier of the peak
    rate`` (or ``"package.module:function"``), pure Python; ``params`` a
    :class:`ScheduleParams` subclass whose fields reach it as keyword arguments (the spec's
    ``train.scheduler: {name: ..., <field>: ...}``). Registering a name again replaces a
    user schedule; built-in ones cannot be replaced.
    """
    check_new_name(name, SCHEDULERS, "schedule")
    info = SchedulerInfo(
        name=name,
        summary=summary or f"user schedule '{name}'",
        params=_settings_model(params, ScheduleParams, "schedule"),
        factor=factor,
    )
    SCHEDULERS[name] = info
    return info


def register_selector(
    name: str,
    *,
    select: Ref,
    params: type[SelectorParams] | None = None,
    summary: str = "",
    paper: str = "",
) -> SelectorInfo:
    """Register a data selector under ``name`` (the spec's ``data.select: {name: ...}``).

    ``select`` is ``(candidates, count, seed, settings) -> Selection`` (or
    ``"package.module:function"``; see :mod:`workbench.data.selection.selecting`): it keeps
    exactly ``count`` rows and scores every row. ``params`` a :class:`SelectorParams`
    subclass with its settings beside ``budget``. Registering a name again replaces a user
    selector; built-in ones cannot be replaced.
    """
    check_new_name(name, SELECTORS, "selector")
    info = SelectorInfo(
        name=name,
        summary=summary or f"user selector '{name}'",
        params=_settings_model(params, SelectorParams, "selector"),
        select=select,
        paper=paper,
    )
    SELECTORS[name] = info
    return info


def _settings_model(params: type | None, base: type, what: str) -> type:
    if params is None:
        return base
    if not (isinstance(params, type) and issubclass(params, base)):
        raise TypeError(f"a {what}'s params must be a subclass of workbench.{base.__name__}")
    return params


__all__ = [
    "ADAPTERS",
    "AdamParams",
    "MezoParams",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SELECTORS",
    "SGDParams",
    "register_adapter",
    "register_optimizer",
    "register_schedule",
    "register_selector",
]
