"""A study config's ``search`` section and the searched space.

:class:`SearchSettings` (with one :class:`Dimension` per searched field) is the ``search``
section of a study config; :func:`load_config` reads a study config file and
:func:`check_space` checks every searched field against the spec before any run, naming the
field, the value and what is allowed. :func:`suggest` asks an Optuna trial for a value of
each field and :func:`apply_params` sets the values on the spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec, load_yaml
from workbench.studies.search.pruning import PRUNING_RULES

SAMPLERS = ("nsga2", "gp")


# --------------------------------------------------------------------------- the config


class Dimension(BaseModel):
    """One searched field: a range ``low``..``high`` (``log`` scale, ``step``) or ``choices``."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(None, description="Lowest value (with high).")
    high: float | None = Field(None, description="Highest value (with low).")
    log: bool = Field(False, description="Sample on a log scale (low > 0).")
    step: float | None = Field(None, gt=0, description="Spacing of the values from low.")
    choices: list[Any] | None = Field(None, min_length=1, description="Values to choose from.")

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices or low/high (with log or step), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g}), both finite")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class SearchSettings(BaseModel):
    """The ``search`` section of a study config."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Dimension] = Field(
        ...,
        min_length=1,
        description="Dotted spec field -> Dimension, e.g. 'adapter.r': {choices: [2, 4, 8]}, "
        "'optimizer.lr': {low: 1e-4, high: 1e-2, log: true}, "
        "'objectives.correctness.weight': {low: 0.1, high: 0.9}.",
    )
    sampler: Literal["nsga2", "gp"] = Field(
        "nsga2",
        description="nsga2: Optuna's NSGA-II; gp: its Gaussian-process sampler "
        "(expected hypervolume improvement).",
    )
    population_size: int = Field(8, ge=2, description="NSGA-II: trials per generation.")
    startup_trials: int = Field(5, ge=1, description="gp: random trials before the GP is fitted.")
    seed: int = Field(0, description="Sampler seed; worker k uses seed + k, so workers differ.")
    pruning: str = Field(
        "dominated",
        description="dominated (prune a trial dominated by a completed one at the "
        "same step), none, or 'module:function' (a PruneQuery -> "
        "reason or None).",
    )
    storage: str | None = Field(
        None,
        description="SQLAlchemy URL of the Optuna database (default: optuna.db next to a "
        "local MLflow store). Credentials belong in the environment (PGPASSWORD).",
    )
    study: str | None = Field(
        None,
        description="Optuna study name (default: the experiment and the parent run's id); "
        "an existing study continues.",
    )

    @field_validator("pruning")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v not in PRUNING_RULES and ":" not in v:
            raise ValueError(
                f"unknown rule; allowed: {', '.join(PRUNING_RULES)}, or 'module:function'"
            )
        return v


def parse_settings(data: Mapping[str, Any] | SearchSettings) -> SearchSettings:
    if isinstance(data, SearchSettings):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(f"search must be a mapping of settings, got {type(data).__name__}")
    try:
        return SearchSettings.model_validate(dict(data))
    except ValidationError as err:
        lines = ["invalid search settings:"]
        for e in err.errors():
            where = ".".join(str(p) for p in ("search", *e["loc"]))
            shown = repr(e.get("input"))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field; check its spelling"
            lines.append(f"  {where} = {shown}: {msg}")
        raise SpecError("\n".join(lines)) from None


def load_config(path: str | Path, **changes: Any) -> tuple[RunSpec, SearchSettings]:
    """A study config file: a YAML run spec with a ``search`` section. ``changes`` are dotted
    spec changes (``train.steps``) or search settings (``search.sampler``); None is ignored."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            f"study config {path} does not exist; pass the path of a YAML run spec "
            "with a search section"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"study config {path} cannot be read: {err}") from None
    data = load_yaml(text, source=path)
    if not isinstance(data, dict) or not isinstance(data.get("search"), dict):
        raise SpecError(
            f"study config {path} has no search section; add one, e.g.\n"
            "search:\n  space:\n    optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    search = dict(data.pop("search"))
    spec_changes = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key.startswith("search."):
            search[key.removeprefix("search.")] = value
        else:
            spec_changes[key] = value
    spec = RunSpec.parse(data)
    if spec_changes:
        spec = spec.updated(**spec_changes)
    settings = parse_settings(search)
    check_space(spec, settings)
    return spec, settings


# --------------------------------------------------------------------------- the space


def apply_params(spec: RunSpec, params: Mapping[str, Any]) -> RunSpec:
    """``spec`` with the sampled ``params`` set (dotted fields; ``objectives.<name>.<field>``
    addresses an objective by name)."""
    objectives = {o.name: o.model_dump(mode="json") for o in spec.objectives}
    dotted, touched = {}, False
    for path, value in params.items():
        parts = path.split(".")
        if parts[0] == "objectives":
            if len(parts) != 3 or parts[1] not in objectives:
                raise SpecError(
                    f"search.space.{path}: objectives are addressed as "
                    f"objectives.<name>.weight; names: {', '.join(objectives)}"
                )
            if parts[2] != "weight":
                raise SpecError(
                    f"search.space.{path}: only an objective's training weight "
                    "(objectives.<name>.weight) can be searched"
                )
            if objectives[parts[1]].get("term") is None:
                raise SpecError(
                    f"search.space.{path}: objective '{parts[1]}' has no loss term, so "
                    "its weight trains nothing; search the weight of an objective "
                    "with a term"
                )
            objectives[parts[1]]["weight"] = value
            touched = True
        elif len(parts) < 2:
            raise SpecError(
                f"search.space.{path}: name a field inside a section, e.g. "
                "optimizer.lr or adapter.r"
            )
        else:
            dotted[path] = value
    if touched:
        dotted["objectives"] = list(objectives.values())
    return spec.updated(**dotted)


def _current_value(spec: RunSpec, path: str) -> Any:
    parts = path.split(".")
    if parts[0] == "objectives" and len(parts) == 3:
        return next(
            (getattr(o, parts[2], None) for o in spec.objectives if o.name == parts[1]), None
        )
    node: Any = spec.model_dump(mode="json")
    for key in parts:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def is_integer(spec: RunSpec, path: str, dim: Dimension) -> bool:
    """Whether a range is sampled as integers: the field holds an int and the bounds are whole."""
    current = _current_value(spec, path)
    whole = all(float(v).is_integer() for v in (dim.low, dim.high, dim.step or 1))
    return isinstance(current, int) and not isinstance(current, bool) and whole


def check_space(spec: RunSpec, settings: SearchSettings) -> None:
    """Every searched field exists and takes the ends of its range (or each choice), so a bad
    space fails here, naming the field, the value and what is allowed."""
    for path, dim in settings.space.items():
        values = dim.choices if dim.choices is not None else [dim.low, dim.high]
        if dim.choices is None and is_integer(spec, path, dim):
            values = [int(v) for v in values]
        for value in values:
            try:
                apply_params(spec, {path: value})
            except SpecError as err:
                detail = str(err).removeprefix("invalid run spec:").strip()
                if detail.startswith(f"search.space.{path}"):
                    raise
                raise SpecError(
                    f"search.space.{path} = {value!r}: not a valid value of the "
                    f"spec field:\n  {detail}"
                ) from None


def suggest(trial, spec: RunSpec, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Ask an Optuna trial for a value of every searched field (the param names are the paths)."""
    params = {}
    for path, dim in space.items():
        if dim.choices is not None:
            params[path] = trial.suggest_categorical(path, dim.choices)
        elif is_integer(spec, path, dim):
            params[path] = trial.suggest_int(
                path, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log
            )
        else:
            params[path] = trial.suggest_float(path, dim.low, dim.high, step=dim.step, log=dim.log)
    return params
