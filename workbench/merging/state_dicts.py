"""Merging whole models: task vectors of state dicts, merged weight by weight.

A model here is a mapping ``{parameter name: tensor}`` (``dict(model.named_parameters())``,
which lists a tied weight once). :func:`task_vector` is a fine-tuned model minus its base;
:func:`merge_task_vectors` merges several weight by weight with a method of
``catalog.METHODS`` (a name missing from a task vector counts as unchanged, so a LoRA
adapter's deltas, which cover only its target modules, merge with full models);
:func:`lines_scaling` is LiNeS' depth-wise rescaling; :func:`merge_models` puts it together:
``theta_0 + lines(merged(tau_1, ..., tau_K))``.

Each weight is merged in float64 and cast back to the base's dtype, so merging one model with
weight 1 gives back its weights exactly. DARE's random masks come from a generator seeded by
``(seed, parameter name)``, so a merge is reproducible and independent of the order the
weights are visited in.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence

import torch

from workbench.merging.catalog import MergeSettings
from workbench.merging.tensors import merge_by_method

Weights = Mapping[str, torch.Tensor]

# Transformer blocks in Hugging Face models: model.layers.3., transformer.h.3., blocks.3. ...
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def task_vector(base: Weights, finetuned: Weights) -> dict[str, torch.Tensor]:
    """``finetuned - base`` for every weight of ``base`` (float64); a weight ``finetuned``
    lacks or shapes differently is an error naming it."""
    out = {}
    for name, theta0 in base.items():
        if name not in finetuned:
            raise KeyError(f"the fine-tuned model has no weight {name!r}; merge models of one base")
        theta = finetuned[name]
        if theta.shape != theta0.shape:
            raise ValueError(
                f"weight {name!r}: shape {tuple(theta.shape)} against the base's "
                f"{tuple(theta0.shape)}; merge models of one base"
            )
        out[name] = theta.detach().double() - theta0.detach().double()
    return out


def _generator(seed: int, name: str) -> torch.Generator:
    # torch's CPU generator keeps 32 bits of a seed: hash the seed with the name.
    return torch.Generator().manual_seed(zlib.crc32(f"{int(seed)}:{name}".encode()))


def merge_task_vectors(
    vectors: Sequence[Weights], settings: MergeSettings, names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The merged task vector, weight by weight (float64), over ``names`` (default: every
    name any vector has). A learned method (AdaMerging) is merged by :mod:`.adamerging`."""
    if settings.info.learned:
        raise ValueError(
            f"'{settings.method}' learns its coefficients: use workbench.merging.adamerging"
        )
    if names is None:
        names = list(dict.fromkeys(n for v in vectors for n in v))
    merged = {}
    for name in names:
        present = [v[name] for v in vectors if name in v]
        if not present:
            continue
        zero = torch.zeros_like(present[0], dtype=torch.float64)
        tensors = [v[name].double() if name in v else zero for v in vectors]
        merged[name] = merge_by_method(
            settings.method,
            tensors,
            torch.tensor(settings.weights, dtype=torch.float64),
            density=settings.density,
            gamma=settings.gamma,
            majority_sign_method=settings.majority_sign_method,
            generator=_generator(settings.seed, name) if settings.uses("seed") else None,
        )
    return merged


def layer_depths(names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{name: (l, L)}``: the transformer block ``l`` of ``L`` each weight belongs to, in the
    model's order; weights before the first block (embeddings) are depth 0, weights after the
    last (final norm, head) depth L - 1."""
    blocks = {name: int(m.group(1)) for name in names if (m := _BLOCK.search(name))}
    count = max(blocks.values()) + 1 if blocks else 1
    depths, seen_block = {}, False
    for name in names:
        if name in blocks:
            depths[name], seen_block = (blocks[name], count), True
        else:
            depths[name] = (count - 1 if seen_block else 0, count)
    return depths


def lines_scaling(
    vector: Weights, alpha: float, beta: float, order: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """LiNeS (Wang et al., 2025): the weights of block l of L scaled by alpha + beta l/(L-1),
    so shallow blocks keep less of the change (less forgetting) and deep ones more.
    ``order`` is the model's weight order (default: ``vector``'s)."""
    depths = layer_depths(list(order if order is not None else vector))
    out = {}
    for name, tau in vector.items():
        depth, count = depths.get(name, (0, 1))
        out[name] = tau * (alpha + beta * (depth / (count - 1) if count > 1 else 0.0))
    return out


def add_task_vector(base: Weights, vector: Weights, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``base + scale * vector``, each weight in float64 then cast to the base's dtype."""
    out = {}
    for name, theta0 in base.items():
        if name in vector:
            out[name] = (theta0.detach().double() + scale * vector[name]).to(theta0.dtype)
        else:
            out[name] = theta0.detach().clone()
    return out


def merge_models(
    base: Weights, vectors: Sequence[Weights], settings: MergeSettings
) -> dict[str, torch.Tensor]:
    """``theta_0 + merged task vector`` (LiNeS-scaled when the settings say so), as weights
    of the base's dtype, for every weight of ``base``."""
    merged = merge_task_vectors(
        vectors, settings, names=[n for n in base if any(n in v for v in vectors)]
    )
    lines = settings.lines()
    if lines is not None:
        merged = lines_scaling(merged, *lines, order=list(base))
    return add_task_vector(base, merged)


def load_weights(model, weights: Weights) -> None:
    """Copy ``weights`` into ``model``'s parameters of the same names (in place, no grad)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
