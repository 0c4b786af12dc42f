"""ExperimentBuilder: the controls of a RunSpec, with the method registry's own words.

Every change re-validates the spec (:func:`workbench.widgets.forms.build_spec`); a bad
setting shows its message next to its control, and :attr:`ExperimentBuilder.spec` is None
until it is fixed. Nothing is trained here: a :class:`~workbench.widgets.RunMonitor` launches
the builder's spec.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from workbench.data.tasks import TASKS
from workbench.spec import components, registry
from workbench.spec.run_spec import RunSpec
from workbench.widgets import forms, readable

_ERROR_STYLE = "color:#b00020;font-size:90%;white-space:pre-wrap"
_WIDE = w.Layout(width="420px")


def _error_html() -> w.HTML:
    return w.HTML(layout=w.Layout(margin="0 0 0 8px"))


def _param_control(kind: str, value: Any, description: str, label: str, width: str) -> w.Widget:
    style = {"description_width": width}
    if kind == "bool":
        return w.Checkbox(
            value=bool(value),
            description=label,
            tooltip=description,
            indent=False,
            layout=w.Layout(width="auto"),
        )
    if kind == "int":
        return w.IntText(value=int(value), description=label, tooltip=description, style=style)
    if kind == "float":
        return w.FloatText(value=float(value), description=label, tooltip=description, style=style)
    if kind == "list":
        return w.Text(
            value=", ".join(map(str, value or [])),
            description=label,
            tooltip=description,
            style=style,
            layout=_WIDE,
        )
    return w.Text(
        value="" if value is None else str(value),
        description=label,
        tooltip=description,
        style=style,
    )


def _control_value(kind: str, control: w.Widget) -> Any:
    return forms.parse_list(control.value) if kind == "list" else control.value


class _ParamsBox(w.VBox):
    """The settings of one method or adapter, built from its parameter model."""

    def __init__(self, section: str, model: type, values: dict[str, Any], on_change):
        self.section = section
        self.fields = forms.param_fields(model)
        self.controls: dict[str, w.Widget] = {}
        self.errors: dict[str, w.HTML] = {}
        rows = []
        labels = forms.param_labels(model)
        width = readable.label_width(labels.values(), minimum=120)
        for name, kind, default, description in self.fields:
            control = _param_control(
                kind, values.get(name, default), description, labels[name], width
            )
            control.observe(on_change, "value")
            self.controls[name] = control
            self.errors[name] = _error_html()
            hint = w.HTML(
                f"<span style='color:#666;font-size:85%'>{html.escape(description)}</span>"
            )
            rows.append(w.HBox([control, hint, self.errors[name]]))
        super().__init__(rows)

    def values(self) -> dict[str, Any]:
        return {name: _control_value(kind, self.controls[name]) for name, kind, _, _ in self.fields}


class ExperimentBuilder(w.VBox):
    """Base model, task or data file, method and its parameters (with formula and paper),
    adapter and its settings, objectives with training-weight sliders, training knobs and
    the kernels switch; :attr:`spec` is the RunSpec they make (None while a setting is bad,
    :attr:`error` then says why). "Show the code" prints the YAML and the Python call.

    ``base`` (a RunSpec or dict) gives every setting the controls do not show (e.g. the tiny
    base's size), and their starting values.
    """

    def __init__(self, base: RunSpec | dict | None = None):
        self.base = forms.base_dict(base)
        self.spec: RunSpec | None = None
        self.error = ""
        self._syncing = False
        b = self.base
        style = {"description_width": "120px"}
        self.model = w.Text(
            value=b["model"]["name"],
            description="base model",
            style=style,
            tooltip="'tiny' (built locally), a local folder, or a hub id",
        )
        self.data = w.Combobox(
            value=b["data"]["source"],
            options=sorted(TASKS),
            ensure_option=False,
            description="task or file",
            style=style,
            tooltip="a built-in task, a JSONL/CSV/parquet file, or owner/name",
        )
        self.method = w.Dropdown(
            options=sorted(registry.METHODS),
            value=b["method"]["name"],
            description="method",
            style=style,
        )
        self.method_info = w.HTML()
        self.adapter = w.Dropdown(
            options=sorted(components.ADAPTERS),
            value=b["adapter"]["name"],
            description="adapter",
            style=style,
        )
        self.adapter_info = w.HTML()
        self.steps = w.IntText(value=b["train"]["steps"], description="steps", style=style)
        self.batch_size = w.IntText(
            value=b["train"]["batch_size"], description="batch size", style=style
        )
        self.lr = w.FloatText(value=b["optimizer"]["lr"], description="learning rate", style=style)
        self.eval_every = w.IntText(
            value=b["train"]["eval_every"], description="evaluate every", style=style
        )
        self.seed = w.IntText(value=b["train"]["seed"], description="seed", style=style)
        # Only what this machine can run (triton needs CUDA), and the base spec's own choice.
        kernel_options = forms.machine_kernel_choices()
        if b["kernels"] not in kernel_options:
            kernel_options.append(b["kernels"])
        self.kernels = w.ToggleButtons(
            options=kernel_options,
            value=b["kernels"],
            description="kernels",
            style=style,
        )
        self.experiment = w.Text(
            value=b["tracking"]["experiment"], description="experiment", style=style
        )
        self.simplex = w.Checkbox(value=True, description="training weights sum to 1", indent=False)
        self.show_code = w.Button(description="Show the code", icon="code")
        self.code = w.HTML()
        self.status = w.HTML()
        self.method_box = w.VBox()
        self.adapter_box = w.VBox()
        self.objectives_box = w.VBox()
        self.weights: list[w.FloatSlider] = []
        self._objectives: list[dict[str, Any]] = list(b["objectives"])
        self.field_errors: dict[str, w.HTML] = {}
        for path in (
            "model",
            "data",
            "method",
            "adapter",
            "train.steps",
            "train.batch_size",
            "optimizer.lr",
            "train.eval_every",
            "train.seed",
            "kernels",
            "tracking",
        ):
            self.field_errors[path] = _error_html()
        self.controls: dict[str, w.Widget] = {
            "model.name": self.model,
            "data.source": self.data,
            "method.name": self.method,
            "adapter.name": self.adapter,
            "train.steps": self.steps,
            "train.batch_size": self.batch_size,
            "optimizer.lr": self.lr,
            "train.eval_every": self.eval_every,
            "train.seed": self.seed,
            "kernels": self.kernels,
            "tracking.experiment": self.experiment,
        }

        self._build_params("method", b["method"])
        self._build_params("adapter", b["adapter"])
        self._build_objectives()
        for control in self.controls.values():
            control.observe(self._changed, "value")
        self.method.observe(self._method_changed, "value")
        self.adapter.observe(
            lambda _: self._build_params("adapter", {}) or self._changed(), "value"
        )
        self.data.observe(self._task_changed, "value")
        self.simplex.observe(self._simplex_toggled, "value")
        self.show_code.on_click(lambda _: self.render_code())

        def row(control, path):
            return w.HBox([control, self.field_errors[path]])

        super().__init__(
            [
                w.HTML("<b>Model and data</b>"),
                row(self.model, "model"),
                row(self.data, "data"),
                w.HTML("<b>Method</b>"),
                row(self.method, "method"),
                self.method_info,
                self.method_box,
                w.HTML("<b>Adapter</b>"),
                row(self.adapter, "adapter"),
                self.adapter_info,
                self.adapter_box,
                w.HTML(
                    "<b>Objectives</b> (a slider is the objective's <i>training</i> weight "
                    "on its loss term)"
                ),
                self.simplex,
                self.objectives_box,
                w.HTML("<b>Training</b>"),
                row(self.steps, "train.steps"),
                row(self.batch_size, "train.batch_size"),
                row(self.lr, "optimizer.lr"),
                row(self.eval_every, "train.eval_every"),
                row(self.seed, "train.seed"),
                row(self.kernels, "kernels"),
                row(self.experiment, "tracking"),
                self.status,
                self.show_code,
                self.code,
            ]
        )
        self._changed()

    # -- building the variable parts -------------------------------------------------------

    def _build_params(self, section: str, values: dict[str, Any]) -> None:
        table = registry.METHODS if section == "method" else components.ADAPTERS
        choice = (self.method if section == "method" else self.adapter).value
        info = table[choice]
        box = _ParamsBox(section, info.params, values, self._changed)
        if section == "method":
            self.method_params = box
            self.method_box.children = (box,)
            self.method_info.value = (
                f"<div style='margin-left:124px'>{html.escape(info.summary)}<br>"
                f"<code>{html.escape(info.formula)}</code><br>"
                f"<i>{html.escape(info.paper)}</i></div>"
            )
        else:
            self.adapter_params = box
            self.adapter_box.children = (box,)
            paper = f"<br><i>{html.escape(info.paper)}</i>" if info.paper else ""
            self.adapter_info.value = (
                f"<div style='margin-left:124px'>{html.escape(info.summary)}{paper}</div>"
            )

    def _build_objectives(self) -> None:
        self.weights = []
        self.weight_errors: list[w.HTML] = []
        rows = []
        width = readable.label_width([o["name"] for o in self._objectives], minimum=120)
        for i, o in enumerate(self._objectives):
            what = f"{o['name']} ({o['direction']}, {o['source']})"
            if o.get("term"):
                slider = w.FloatSlider(
                    value=float(o["weight"]),
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    description=o["name"],
                    readout_format=".2f",
                    style={"description_width": width},
                    layout=_WIDE,
                )
                slider.observe(lambda change, i=i: self._weight_moved(i, change["new"]), "value")
                self.weights.append(slider)
                error = _error_html()
                self.weight_errors.append(error)
                rows.append(
                    w.HBox(
                        [
                            slider,
                            w.HTML(
                                f"<span style='color:#666'>{html.escape(what)}, "
                                f"term {html.escape(o['term'])}</span>"
                            ),
                            error,
                        ]
                    )
                )
            else:
                rows.append(
                    w.HTML(
                        f"<div style='margin-left:124px'>{html.escape(what)}: measured, "
                        f"not trained on</div>"
                    )
                )
        self.objectives_box.children = tuple(rows)

    # -- reacting --------------------------------------------------------------------------

    def _weighted(self) -> list[int]:
        return [i for i, o in enumerate(self._objectives) if o.get("term")]

    def _weight_moved(self, slider_index: int, value: float) -> None:
        if self._syncing:
            return
        if self.simplex.value and len(self.weights) > 1:
            current = [s.value for s in self.weights]
            current[slider_index] = value
            self._set_weights(forms.simplex_rescale(current, slider_index, value))
        self._changed()

    def _set_weights(self, values: list[float]) -> None:
        self._syncing = True
        try:
            for slider, value in zip(self.weights, values):
                slider.value = value
        finally:
            self._syncing = False

    def _simplex_toggled(self, change) -> None:
        if change["new"] and self.weights:
            total = sum(s.value for s in self.weights)
            n = len(self.weights)
            self._set_weights([s.value / total if total > 0 else 1.0 / n for s in self.weights])
        self._changed()

    def _default_objectives(
        self, source: str, method: str | None
    ) -> tuple[list[dict] | None, str | None]:
        """The objectives (and method) a spec gets for ``source`` and ``method`` by default."""
        data = dict(self.base, objectives=[], method=method)
        data["data"] = dict(self.base["data"], source=source)
        spec, _ = forms.build_spec(data, {})
        if spec is None:
            return None, None
        return [o.model_dump(mode="json") for o in spec.objectives], spec.method.name

    def _method_changed(self, change) -> None:
        self._build_params("method", {})
        # The task's objectives keep only the terms the new method has.
        objectives, _ = self._default_objectives(self.data.value, change["new"])
        if objectives is not None:
            old = {o["name"]: o for o in self.choices()["objectives"]}
            for o in objectives:
                if o["name"] in old and o.get("term") and old[o["name"]].get("term") == o["term"]:
                    o["weight"] = old[o["name"]]["weight"]
            self._objectives = objectives
            self._build_objectives()
        self._changed()

    def _task_changed(self, change) -> None:
        # A new task brings its own objectives; a file keeps the held-out loss.
        objectives, method = self._default_objectives(change["new"], None)
        if objectives is not None:
            self._objectives = objectives
            self._build_objectives()
            if method != self.method.value:
                self.method.value = method  # the task's default method (and its objectives)
        self._changed()

    def choices(self) -> dict[str, Any]:
        """The form as dotted spec paths -> values (what :func:`forms.build_spec` applies)."""
        objectives = [dict(o) for o in self._objectives]
        for i, slider in zip(self._weighted(), self.weights):
            objectives[i]["weight"] = slider.value
        return {
            "model.name": self.model.value,
            "data.source": self.data.value,
            "method": {"name": self.method.value, **self.method_params.values()},
            "adapter": {"name": self.adapter.value, **self.adapter_params.values()},
            "objectives": objectives,
            "train.steps": self.steps.value,
            "train.batch_size": self.batch_size.value,
            "optimizer.lr": self.lr.value,
            "train.eval_every": self.eval_every.value,
            "train.seed": self.seed.value,
            "kernels": self.kernels.value,
            "tracking.experiment": self.experiment.value,
        }

    def _changed(self, *_) -> None:
        if self._syncing:
            return
        self.spec, self.error = forms.build_spec(self.base, self.choices())
        errors = forms.errors_by_field(self.error)
        shown: set[str] = set()
        for path, box in self.field_errors.items():
            box.value = self._error_text(forms.error_for(errors, path))
            shown |= {k for k in errors if k == path or k.startswith(path + ".")}
        for params in (self.method_params, self.adapter_params):
            for name, box in params.errors.items():
                key = f"{params.section}.{name}"
                box.value = self._error_text(forms.error_for(errors, key))
                shown |= {k for k in errors if k == key or k.startswith(key + ".")}
        for i, box in zip(self._weighted(), self.weight_errors):
            key = f"objectives.{i}"
            box.value = self._error_text(forms.error_for(errors, key))
            shown |= {k for k in errors if k == key or k.startswith(key + ".")}
        rest = "\n".join(v for k, v in errors.items() if k not in shown)
        if self.spec is not None:
            self.status.value = "<span style='color:#1b5e20'>the spec is valid</span>"
        else:
            self.status.value = self._error_text(
                rest or "the spec is invalid (see the messages above)"
            )
        if self.code.value:
            self.render_code()

    @staticmethod
    def _error_text(text: str) -> str:
        return f"<span style='{_ERROR_STYLE}'>{html.escape(text)}</span>" if text else ""

    def render_code(self) -> tuple[str, str] | None:
        """Show (and return) the spec's YAML and the Python call; None while it is invalid."""
        if self.spec is None:
            self.code.value = self._error_text("fix the settings above first:\n" + self.error)
            return None
        yaml_text, python = forms.spec_code(self.spec)
        self.code.value = (
            f"<b>YAML</b> (save as spec.yaml; <code>workbench launch spec.yaml</code>)"
            f"<pre>{html.escape(yaml_text)}</pre><b>Python</b>"
            f"<pre>{html.escape(python)}</pre>"
        )
        return yaml_text, python
