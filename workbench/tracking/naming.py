"""Run names that say what a run is, and the MLflow UI's view of the workbench's experiments.

MLflow gives an unnamed run a random name (``silent-steed-907``), which tells a reader
nothing about which weight or setting the run had. The workbench names every run it creates
after what sets it apart: a sweep's child after its training weights (``correctness=0.7``),
a search trial after its sampled values (``adapter.r=16, optimizer.lr=0.001 (trial 3)``), a
plain run after its method, task and, for a multi-objective spec, its weights
(``mo-sft order correctness=0.9``). A name the user gives (``tracking.run_name``) always wins.

MLflow 3 opens an experiment on its GenAI overview unless it knows the experiment is
classic model development. Its experiment kind tag says so (:data:`EXPERIMENT_KIND_TAG`), and
the workbench sets it on every experiment it creates or opens. MLflow 3.17's UI lets a
switch in its sidebar ("GenAI" / "Model training") decide instead, remembered per browser;
:func:`experiment_url` is a link that opens the runs table whatever that switch says.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from workbench.data.records import FILE_SUFFIXES
from workbench.spec.run_spec import RunSpec

# MLflow's experiment kind: "custom_model_development" is its value for classic model
# training (the other one it offers is "genai_development").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The UI's sidebar switch as a URL parameter: "machine_learning" is "Model training".
_WORKFLOW_PARAM = "workflowType=machine_learning"


def shown_value(value: Any) -> str:
    """A value as a run name shows it: floats to 4 significant digits (``0.001``, ``0.5313``)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def changes_label(changes: Mapping[str, Any]) -> str:
    """``field=value, ...`` for the fields a run changed; an objective's training weight
    (``objectives.<name>.weight``) shows as ``<name>=value``, as a sweep's children do."""
    parts = []
    for path, value in changes.items():
        pieces = path.split(".")
        if len(pieces) == 3 and pieces[0] == "objectives" and pieces[2] == "weight":
            path = pieces[1]
        parts.append(f"{path}={shown_value(value)}")
    return ", ".join(parts)


def weights_label(spec: RunSpec) -> str:
    """The training weights of a spec with two or more weighted objectives (those with a loss
    term), named as a weight sweep names its children: ``correctness=0.9`` for two (the
    second is one minus the first), ``a=0.8,b=0.1,c=0.1`` for more; "" for fewer than two."""
    weighted = [o for o in spec.objectives if o.term is not None]
    if len(weighted) < 2:
        return ""
    if len(weighted) == 2:
        return f"{weighted[0].name}={weighted[0].weight:g}"
    return ",".join(f"{o.name}={o.weight:g}" for o in weighted)


def task_label(spec: RunSpec) -> str:
    """The data a spec trains on, short: a built-in task, a folder or a dataset id as given,
    a file by its name without its folders."""
    source = spec.data.source
    return PurePath(source).name if PurePath(source).suffix.lower() in FILE_SUFFIXES else source


def default_run_name(spec: RunSpec) -> str:
    """The name of a run created from ``spec`` with no ``tracking.run_name``: its method, its
    data and, where it trains two or more weighted objectives, their weights (``sft order``,
    ``dpo reverse``, ``mo-sft order correctness=0.9``)."""
    return " ".join(
        part for part in (spec.method.name, task_label(spec), weights_label(spec)) if part
    )


def study_run_name(spec: RunSpec, kind: str) -> str:
    """The name of a sweep's or study's parent run: the user's ``tracking.run_name``, else what
    it studies and how (``mo-sft order sweep``)."""
    return spec.tracking.run_name or f"{spec.method.name} {task_label(spec)} {kind}"


def experiment_url(server_url: str, experiment_id: str) -> str:
    """A link to an experiment's runs table on an MLflow server, in the UI's "Model training"
    view (MLflow 3.17 otherwise opens a GenAI overview with no runs, in a browser that has not
    chosen that view before)."""
    return f"{server_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{_WORKFLOW_PARAM}"
