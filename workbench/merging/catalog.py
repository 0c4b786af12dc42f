"""The merge methods by name, and the checked settings of one merge; no torch here.

A merge method is a **sparsifier** (which entries of each task vector survive) followed by a
**consensus rule** (how the surviving entries of the task vectors combine), as mergekit
composes them; LiNeS is a depth-wise rescaling applied after either (:mod:`.state_dicts`)
and AdaMerging learns the coefficients instead of taking them (:mod:`.adamerging`).
A task vector is a fine-tuned model's weights minus its base's, ``tau_k = theta_k - theta_0``;
every method returns ``theta_0 + merged(tau_1, ..., tau_K)``.

The sparsifiers and consensus rules are tables of functions (lazy ``"module:function"``
references into :mod:`.tensors`, resolved when a merge runs); the merge code looks them up
by name and never branches on it. The CLI validates a merge against these tables before
torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.spec.entries import Ref
from workbench.spec.errors import SpecError


@dataclass(frozen=True)
class Sparsifier:
    """Which entries of one task tensor survive: ``apply(tensor, **kwargs) -> tensor``, given
    the keyword arguments named in ``takes`` (``density``, ``gamma``, ``generator``)."""

    name: str
    summary: str
    apply: Ref
    takes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsensusRule:
    """How the (sparsified) task tensors combine: ``combine(stacked, weights, **kwargs) ->
    tensor`` over the stacked ``(K, ...)`` tensors, given the keyword arguments in ``takes``."""

    name: str
    summary: str
    combine: Ref
    takes: tuple[str, ...] = ()


SPARSIFIERS: dict[str, Sparsifier] = {
    s.name: s
    for s in [
        Sparsifier("none", "every entry kept", "workbench.merging.tensors:keep_all"),
        Sparsifier(
            "magnitude",
            "the top density fraction of |tau| kept, the rest zeroed (TIES' trim step)",
            "workbench.merging.tensors:magnitude_trim",
            ("density",),
        ),
        Sparsifier(
            "random",
            "each entry kept with probability density and rescaled by 1/density (DARE)",
            "workbench.merging.tensors:random_drop",
            ("density", "generator"),
        ),
        Sparsifier(
            "breadcrumbs",
            "the largest gamma fraction of |tau| (outliers) and the smallest entries zeroed, "
            "so a density fraction is kept",
            "workbench.merging.tensors:breadcrumbs_trim",
            ("density", "gamma"),
        ),
    ]
}
CONSENSUS_RULES: dict[str, ConsensusRule] = {
    c.name: c
    for c in [
        ConsensusRule("sum", "sum_k w_k tau_k", "workbench.merging.tensors:weighted_sum"),
        ConsensusRule(
            "sign_elect",
            "per entry, the sign of sum_k tau_k (or of the count of signs) is elected; "
            "sum_k w_k tau_k over the tau_k that agree with it, divided by how many agree",
            "workbench.merging.tensors:sign_elected_mean",
            ("majority_sign_method",),
        ),
    ]
}
MAJORITY_SIGN_METHODS = ("total", "frequency")
# The merge setting (``merge.<name>`` in MLflow) behind each keyword argument a sparsifier or
# a consensus rule takes: a random sparsifier's generator is seeded by ``seed``.
_SETTING_OF_ARGUMENT = {
    "density": "density",
    "gamma": "gamma",
    "generator": "seed",
    "majority_sign_method": "majority_sign_method",
}


@dataclass(frozen=True)
class MergeMethod:
    """One merge method: a sparsifier and a consensus rule (see the module docstring)."""

    name: str
    sparsify: str  # a key of SPARSIFIERS
    consensus: str  # a key of CONSENSUS_RULES
    formula: str
    paper: str
    normalize: bool = False  # weights divided by their sum (a soup averages)
    lora_factors: bool = False  # LoRA adapters can merge as factors (exactly; see .lora)
    learned: bool = False  # coefficients learned, not given (AdaMerging)
    layer_scaled: bool = False  # LiNeS depth scaling on by default


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in [
        MergeMethod(
            "linear",
            "none",
            "sum",
            "theta = sum_k w_k theta_k / sum_k w_k",
            "Model soups (Wortsman et al., 2022); Rewarded soups (Rame et al., 2023)",
            normalize=True,
            lora_factors=True,
        ),
        MergeMethod(
            "task_arithmetic",
            "none",
            "sum",
            "theta = theta_0 + sum_k w_k tau_k",
            "Editing Models with Task Arithmetic (Ilharco et al., 2023)",
            lora_factors=True,
        ),
        MergeMethod(
            "magnitude_prune",
            "magnitude",
            "sum",
            "theta = theta_0 + sum_k w_k topk_density(|tau_k|) tau_k",
            "(task arithmetic on magnitude-pruned task vectors; peft's magnitude_prune)",
        ),
        MergeMethod(
            "ties",
            "magnitude",
            "sign_elect",
            "theta = theta_0 + mean_{k: sign(tau_k) = elected} w_k trim_density(tau_k)",
            "TIES-Merging: Resolving Interference When Merging Models (Yadav et al., 2023)",
        ),
        MergeMethod(
            "dare_linear",
            "random",
            "sum",
            "theta = theta_0 + sum_k w_k (m_k * tau_k) / density, m_k ~ Bernoulli(density)",
            "Language Models are Super Mario (DARE; Yu et al., 2024)",
        ),
        MergeMethod(
            "dare_ties",
            "random",
            "sign_elect",
            "theta = theta_0 + mean_{k: sign agrees} w_k (m_k * tau_k) / density",
            "Language Models are Super Mario (DARE; Yu et al., 2024)",
        ),
        MergeMethod(
            "breadcrumbs",
            "breadcrumbs",
            "sum",
            "theta = theta_0 + sum_k w_k mask_{gamma, density}(|tau_k|) tau_k",
            "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks "
            "(Davari & Belilovsky, 2024)",
        ),
        MergeMethod(
            "breadcrumbs_ties",
            "breadcrumbs",
            "sign_elect",
            "breadcrumbs' mask, then TIES' sign election and disjoint mean",
            "Model Breadcrumbs (Davari & Belilovsky, 2024) with TIES' consensus",
        ),
        MergeMethod(
            "lines",
            "none",
            "sum",
            "theta = theta_0 + (alpha + beta l/(L-1)) sum_k w_k tau_k in layer l of L",
            "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model "
            "Merging (Wang et al., 2025)",
            layer_scaled=True,
        ),
        MergeMethod(
            "adamerging",
            "none",
            "sum",
            "theta_j = theta_0j + sum_k lambda_kj tau_kj, lambda = argmin entropy of p(.|x) "
            "on unlabeled x (one lambda per source and weight tensor j)",
            "AdaMerging: Adaptive Model Merging for Multi-Task Learning (Yang et al., 2024)",
            learned=True,
        ),
    ]
}


def method_names() -> str:
    return ", ".join(METHODS)


@dataclass(frozen=True)
class MergeSettings:
    """The checked settings of one merge (see :func:`check_settings`)."""

    method: str
    weights: tuple[float, ...]
    density: float = 1.0
    majority_sign_method: str = "total"
    gamma: float = 0.01
    lines_alpha: float | None = None
    lines_beta: float | None = None
    seed: int = 0

    @property
    def info(self) -> MergeMethod:
        return METHODS[self.method]

    def uses(self, setting: str) -> bool:
        """Whether the method's sparsifier or consensus rule reads ``setting``."""
        takes = (
            *SPARSIFIERS[self.info.sparsify].takes,
            *CONSENSUS_RULES[self.info.consensus].takes,
        )
        return setting in {_SETTING_OF_ARGUMENT[a] for a in takes}

    def lines(self) -> tuple[float, float] | None:
        """(alpha, beta) of the LiNeS scaling, or None when off."""
        if self.lines_alpha is None and self.lines_beta is None and not self.info.layer_scaled:
            return None
        return (
            0.5 if self.lines_alpha is None else self.lines_alpha,
            0.5 if self.lines_beta is None else self.lines_beta,
        )

    def as_params(self) -> dict[str, str]:
        """MLflow params (``merge.<field>``) of the settings a method uses."""
        info = self.info
        params = {"merge.method": self.method}
        if not info.learned:
            params["merge.weights"] = ",".join(f"{w:g}" for w in self.weights)
        if self.uses("density"):
            params["merge.density"] = f"{self.density:g}"
        if self.uses("gamma"):
            params["merge.gamma"] = f"{self.gamma:g}"
        if self.uses("seed"):
            params["merge.seed"] = str(self.seed)
        if self.uses("majority_sign_method"):
            params["merge.majority_sign_method"] = self.majority_sign_method
        lines = self.lines()
        if lines is not None:
            params["merge.lines_alpha"], params["merge.lines_beta"] = (f"{v:g}" for v in lines)
        return params


def check_settings(
    method: str,
    n_models: int,
    weights=None,
    *,
    density: float | None = None,
    majority_sign_method: str = "total",
    gamma: float = 0.01,
    lines_alpha: float | None = None,
    lines_beta: float | None = None,
    seed: int = 0,
) -> MergeSettings:
    """Validated settings for merging ``n_models`` models, or :class:`SpecError` naming the field,
    the value and what is allowed. ``weights`` default to 1 each (``linear``: an average);
    ``density`` to 1 (nothing dropped)."""
    if method not in METHODS:
        raise SpecError(f"merge.method = {method!r}: unknown; allowed: {method_names()}")
    if n_models < 1:
        raise SpecError("a merge needs at least one model")
    weights = tuple(float(w) for w in (weights if weights is not None else [1.0] * n_models))
    if len(weights) != n_models:
        raise SpecError(
            f"merge.weights = {list(weights)}: {len(weights)} values for {n_models} models; "
            "give one weight per model"
        )
    if METHODS[method].normalize and abs(sum(weights)) < 1e-12:
        raise SpecError(
            f"merge.weights = {list(weights)}: a linear soup divides by their sum, which is 0"
        )
    density = 1.0 if density is None else float(density)
    if not 0.0 < density <= 1.0:
        raise SpecError(
            f"merge.density = {density:g}: must be in (0, 1] (the fraction of entries kept)"
        )
    if majority_sign_method not in MAJORITY_SIGN_METHODS:
        raise SpecError(
            f"merge.majority_sign_method = {majority_sign_method!r}: allowed: "
            f"{', '.join(MAJORITY_SIGN_METHODS)}"
        )
    trims_outliers = "gamma" in SPARSIFIERS[METHODS[method].sparsify].takes
    if not 0.0 <= gamma < 1.0 or (trims_outliers and density + gamma > 1.0):
        raise SpecError(
            f"merge.gamma = {gamma:g}: must be in [0, 1) with density + gamma <= 1 "
            f"(density = {density:g})"
        )
    return MergeSettings(
        method,
        weights,
        density,
        majority_sign_method,
        float(gamma),
        None if lines_alpha is None else float(lines_alpha),
        None if lines_beta is None else float(lines_beta),
        int(seed),
    )
