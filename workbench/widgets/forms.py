"""The experiment builder's logic as plain functions (no ipywidgets), tested headless.

A form is a plain dict of choices (dotted spec paths -> values); :func:`build_spec` turns it
into a validated :class:`~workbench.spec.run_spec.RunSpec` or the validation message, never raising
for a bad setting; :func:`errors_by_field` splits that message by the field each line names,
so a widget shows it next to the control; :func:`simplex_rescale` keeps training weights on
the simplex when one slider moves; :func:`spec_code` is the YAML and Python a user can take
out of the GUI.
"""

from __future__ import annotations

import copy
import pprint
import re
import types
import typing
from typing import Any

from pydantic import BaseModel

from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec


def base_dict(base: RunSpec | dict | None) -> dict[str, Any]:
    """The spec a form starts from, as a plain dict (validated first)."""
    if base is None:
        base = {}
    spec = base if isinstance(base, RunSpec) else RunSpec.parse(base)
    return spec.model_dump(mode="json")


def field_kind(annotation: Any) -> str:
    """How a parameter field is edited: 'float', 'int', 'bool', 'list' (comma-separated
    words) or 'text'. Optional fields take their inner type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if origin in (list, tuple):
        return "list"
    return "text"


def param_fields(model: type[BaseModel]) -> list[tuple[str, str, Any, str]]:
    """``(name, kind, default, description)`` of a method's or adapter's settings (not ``name``)."""
    out = []
    for name, info in model.model_fields.items():
        if name == "name":
            continue
        default = info.get_default(call_default_factory=True)
        out.append((name, field_kind(info.annotation), default, info.description or ""))
    return out


def param_labels(model: type[BaseModel]) -> dict[str, str]:
    """``{field name: its label in the form}`` (:func:`param_label`) for a parameter model."""
    return {
        name: param_label(name, info.title)
        for name, info in model.model_fields.items()
        if name != "name"
    }


def param_label(name: str, title: str | None = None) -> str:
    """A setting's label in the form: its field's title when it has one, else its name in
    words (``brevity_position_scale`` -> ``brevity position scale``); the field's description
    is shown beside it."""
    return title or name.replace("_", " ")


def kernel_choices(cuda: bool, triton: bool) -> list[str]:
    """The ``kernels`` settings a machine can run: ``triton`` needs a CUDA device and the
    triton package (on CPU it runs only in the interpreter, which is for tests); ``auto``
    (the ops that pay on this device), ``torch`` and ``off`` run anywhere."""
    return [k for k in ("auto", "triton", "torch", "off") if k != "triton" or (cuda and triton)]


def machine_kernel_choices() -> list[str]:
    """:func:`kernel_choices` for this machine (torch is imported only when triton is
    installed, to ask whether CUDA is there)."""
    import importlib.util

    triton = importlib.util.find_spec("triton") is not None
    cuda = False
    if triton:
        import torch

        cuda = torch.cuda.is_available()
    return kernel_choices(cuda, triton)


def parse_list(text: str) -> list[str]:
    """``"q_proj, v_proj"`` -> ``["q_proj", "v_proj"]``."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def simplex_rescale(weights: list[float], changed: int, value: float) -> list[float]:
    """Weights that sum to 1 after weight ``changed`` is set to ``value`` (clipped to [0, 1]):
    the others share ``1 - value`` in their old proportions (equally when they were all 0)."""
    value = min(1.0, max(0.0, float(value)))
    others = [i for i in range(len(weights)) if i != changed]
    out = list(map(float, weights))
    out[changed] = value
    if not others:
        out[changed] = 1.0
        return out
    rest = sum(max(0.0, weights[i]) for i in others)
    for i in others:
        share = max(0.0, weights[i]) / rest if rest > 0 else 1.0 / len(others)
        out[i] = round((1.0 - value) * share, 6)
    return out


def set_path(data: dict, dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def build_spec(base: dict[str, Any], choices: dict[str, Any]) -> tuple[RunSpec | None, str]:
    """``base`` (a spec dict) with ``choices`` (dotted path -> value) applied, validated.

    Returns ``(spec, "")``, or ``(None, message)`` with the validation message (one line
    per bad field, as :class:`~workbench.spec.errors.SpecError` words it). Whole sections
    (``method``, ``adapter``, ``objectives``) replace the base's.
    """
    data = copy.deepcopy(base)
    for dotted, value in choices.items():
        set_path(data, dotted, value)
    try:
        return RunSpec.parse(data), ""
    except SpecError as err:
        return None, str(err)


def errors_by_field(message: str) -> dict[str, str]:
    """The lines of a validation message by the spec path they name (``"method.beta"``,
    ``"objectives.0.weight"``); lines naming no path go under ``""``."""
    out: dict[str, list[str]] = {}
    for line in message.splitlines():
        text = line.strip()
        if not text or text == "invalid run spec:":
            continue
        path = text.split(" = ", 1)[0] if " = " in text else ""
        if path == "(spec)":  # a rule over several sections: its message, not the whole spec
            whole = re.match(r"\(spec\) = \{.*?(?:\.\.\.|\}): (.*)", text)
            text, path = (whole.group(1) if whole else text), ""
        if " " in path:
            path = ""
        out.setdefault(path, []).append(text)
    return {path: "\n".join(lines) for path, lines in out.items()}


def error_for(errors: dict[str, str], path: str) -> str:
    """The lines about ``path`` or a field inside it (``train`` gets ``train.steps``)."""
    return "\n".join(v for k, v in errors.items() if k == path or k.startswith(path + "."))


def spec_code(spec: RunSpec) -> tuple[str, str]:
    """``(yaml, python)``: the spec as YAML, and the Python that builds and launches it
    (only the settings that differ from the defaults; it parses back to the same spec)."""
    changed = spec.model_dump(mode="json", exclude_defaults=True)
    # The method is filled from the task when unset; keep it explicit.
    changed["method"] = spec.method.model_dump(mode="json", exclude_defaults=True)
    body = pprint.pformat(changed, indent=1, width=88, sort_dicts=False)
    python = (
        "import workbench\n\n"
        f"spec = workbench.RunSpec.parse({body})\n"
        "handle = workbench.launch(spec)   # or workbench.run(spec) in this process\n"
    )
    return spec.to_yaml(), python
