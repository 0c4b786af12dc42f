"""RunSpec: exact YAML round-trips, defaults from the built-in tasks, and errors that name
the field, the bad value and what is allowed."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from workbench.data.tasks import TASKS
from workbench.methods.sft.params import MultiObjectiveSFTParams
from workbench.models.adapters.lora import LoraAdapterParams
from workbench.spec import components, registry
from workbench.spec.components import AdamParams, SGDParams
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    ObjectiveSpec,
    RunSpec,
    TinyModelSpec,
    TrackingSpec,
    TrainSpec,
)


def objective(name="a", direction="min", source="metric:exact_match", term="completion", **kw):
    return {"name": name, "direction": direction, "source": source, "term": term, **kw}


def spec_error(data) -> str:
    with pytest.raises(SpecError) as info:
        RunSpec.parse(data)
    return str(info.value)


# --------------------------------------------------------------------------- round trips


def customised() -> RunSpec:
    return RunSpec.parse(
        {
            "model": {
                "name": "org/some-model",
                "revision": "abc123",
                "trust_remote_code": True,
                "tiny": {"hidden_size": 64, "layers": 3, "pretrain_lr": 0.0125},
            },
            "data": {"source": "data/train.jsonl", "train_size": 123, "eval_fraction": 0.25},
            "method": "mo-sft",
            "adapter": {
                "name": "lora",
                "r": 4,
                "alpha": 8.5,
                "target_modules": ["q_proj", "v_proj"],
            },
            "optimizer": {"name": "adam", "lr": 0.05, "betas": [0.8, 0.95], "eps": 1e-6},
            "objectives": [
                objective("ans", "max", "metric:exact_match", "answer", weight=0.3, reference=-1.5),
                objective("short", "min", "metric:length_items", "brevity", weight=0.7),
                objective("mem", "min", "cost:peak_mem_mb", None),
            ],
            "train": {
                "steps": 7,
                "scheduler": "cosine",
                "grad_clip": None,
                "precision": "bf16-mixed",
                "devices": "auto",
                "checkpoint_every": 3,
                "seed": -4,
            },
            "eval": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
            "kernels": "torch",
            # Strings YAML would otherwise read as bool / null / number must stay strings.
            "tracking": {"experiment": "yes", "run_name": "null", "tags": {"on": "1.5", "k": "~"}},
        }
    )


@pytest.mark.parametrize(
    "make",
    [RunSpec, lambda: RunSpec.parse({"data": {"source": "sort"}}), customised],
    ids=["default", "sort", "customised"],
)
def test_yaml_round_trip_is_exact(make):
    spec = make()
    text = spec.to_yaml()
    again = RunSpec.from_yaml(text)
    assert again == spec
    assert again.to_yaml() == text
    # Every value survives with its type, not just equality after coercion.
    assert again.model_dump() == spec.model_dump()


def test_customised_spec_keeps_values():
    spec = RunSpec.from_yaml(customised().to_yaml())
    assert spec.tracking.experiment == "yes" and spec.tracking.run_name == "null"
    assert spec.tracking.tags == {"on": "1.5", "k": "~"}
    assert spec.train.devices == "auto" and spec.train.grad_clip is None
    assert spec.optimizer.betas == (0.8, 0.95)
    assert [o.weight for o in spec.objectives] == [0.3, 0.7, 1.0]


def test_from_file_round_trip(tmp_path):
    spec = customised()
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml(), encoding="utf-8")
    assert RunSpec.from_file(path) == spec
    assert RunSpec.from_file(str(path)) == spec


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_defaults_come_from_the_builtin_task(task_name):
    task = TASKS[task_name]
    spec = RunSpec.parse({"data": {"source": task_name}})
    assert spec.method.name == task.default_method
    assert len(spec.objectives) == len(task.objectives)
    for got, want in zip(spec.objectives, task.objectives):
        assert (got.name, got.direction, got.term, got.weight, got.reference) == (
            want.name,
            want.direction,
            want.term,
            want.weight,
            want.reference,
        )
        assert got.source == "metric:" + want.metric


def test_default_spec_is_the_order_task():
    spec = RunSpec()
    assert spec.data.source == "order"
    assert spec.method.name == "mo-sft"
    assert [o.name for o in spec.objectives] == [o.name for o in TASKS["order"].objectives]
    assert {o.direction for o in spec.objectives} == {"min", "max"}
    assert spec == RunSpec.parse(None) == RunSpec.parse({})


def test_file_source_defaults_to_sft_on_eval_loss():
    spec = RunSpec.parse({"data": {"source": "my/data.jsonl"}})
    assert spec.method.name == "sft"
    assert len(spec.objectives) == 1
    (obj,) = spec.objectives
    assert (obj.name, obj.direction, obj.source, obj.term) == (
        "eval_loss",
        "min",
        "metric:eval_loss",
        "completion",
    )


def test_explicit_method_and_objectives_are_kept():
    spec = RunSpec.parse({"method": "sft", "objectives": [objective("acc", "max")]})
    assert spec.method.name == "sft"
    assert [o.name for o in spec.objectives] == ["acc"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "path", "value", "allowed"),
    [
        ({"method": "dpo-magic"}, "method", "dpo-magic", list(registry.METHODS)),
        ({"adapter": {"name": "loraa"}}, "adapter.name", "loraa", list(components.ADAPTERS)),
        ({"optimizer": {"name": "lion"}}, "optimizer.name", "lion", list(components.OPTIMIZERS)),
        ({"optimizer": "lion"}, "optimizer", "lion", list(components.OPTIMIZERS)),
        ({"train": {"scheduler": "step"}}, "train.scheduler", "step", list(components.SCHEDULERS)),
        (
            {"train": {"scheduler": {"name": "step"}}},
            "train.scheduler.name",
            "step",
            list(components.SCHEDULERS),
        ),
        ({"train": {"precision": "fp8"}}, "train.precision", "fp8", ["32-true", "bf16-mixed"]),
        ({"kernels": "cuda"}, "kernels", "cuda", list(registry.KERNEL_CHOICES)),
        (
            {"objectives": [objective(direction="up")]},
            "objectives.0.direction",
            "up",
            ["min", "max"],
        ),
        (
            {"objectives": [objective(source="metric:bleu")]},
            "objectives.0.source",
            "metric:bleu",
            ["exact_match", "prefix_accuracy"],
        ),
        (
            {"objectives": [objective(term="fluency")]},
            "objectives.0.term",
            "fluency",
            list(registry.TERMS),
        ),
    ],
)
def test_unknown_choice_names_field_value_and_choices(data, path, value, allowed):
    message = spec_error(data)
    assert f"{path} = {value!r}" in message
    for choice in allowed:
        assert choice in message


@pytest.mark.parametrize(
    ("data", "path", "fields"),
    [
        ({"trian": {"steps": 3}}, "trian", RunSpec.model_fields),
        ({"train": {"stpes": 3}}, "train.stpes", TrainSpec.model_fields),
        ({"model": {"tiny": {"layer": 3}}}, "model.tiny.layer", TinyModelSpec.model_fields),
        (
            {"objectives": [objective(wieght=2.0)]},
            "objectives.0.wieght",
            ObjectiveSpec.model_fields,
        ),
        ({"data": {"sourse": "x.jsonl"}}, "data.sourse", DataSpec.model_fields),
    ],
)
def test_typo_names_field_and_lists_the_real_fields(data, path, fields):
    message = spec_error(data)
    assert path in message
    assert "unknown field" in message
    for name in fields:
        assert name in message


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf"), float("-inf")])
def test_bad_weight(weight):
    message = spec_error({"objectives": [objective(weight=weight)]})
    assert "objectives.0.weight" in message
    assert repr(weight) in message


def test_bad_reference_must_be_finite():
    assert "objectives.0.reference" in spec_error(
        {"objectives": [objective(reference=float("nan"))]}
    )


def test_all_training_weights_zero():
    message = spec_error(
        {
            "objectives": [
                objective("a", weight=0.0),
                objective("b", source="metric:prefix_accuracy", weight=0),
            ]
        }
    )
    assert "weights" in message and "0" in message


def test_zero_weight_allowed_when_another_is_positive():
    spec = RunSpec.parse(
        {
            "objectives": [
                objective("a", term="answer", weight=0.0),
                objective("b", term="brevity", weight=2.0),
            ]
        }
    )
    assert [o.weight for o in spec.objectives] == [0.0, 2.0]


def test_objective_term_the_method_lacks():
    message = spec_error({"method": "sft", "objectives": [objective(term="brevity")]})
    assert "brevity" in message and "sft" in message
    for term in registry.METHODS["sft"].terms:
        assert term in message


def test_duplicate_objective_names():
    message = spec_error({"objectives": [objective("same"), objective("same", direction="max")]})
    assert "duplicate" in message and "same" in message


@pytest.mark.parametrize("text", ["train: [unclosed", "a: b: c", "train:\n  steps: 1\n bad: 2"])
def test_invalid_yaml(text):
    with pytest.raises(SpecError, match="not valid YAML"):
        RunSpec.from_yaml(text)


@pytest.mark.parametrize("text", ["- a\n- b", "just a string", "42"])
def test_non_mapping_yaml(text):
    with pytest.raises(SpecError, match="mapping") as info:
        RunSpec.from_yaml(text)
    assert type(yaml.safe_load(text)).__name__ in str(info.value)


def test_empty_yaml_is_the_default_spec():
    assert RunSpec.from_yaml("") == RunSpec()


@pytest.mark.parametrize("value", ["off", "auto", "torch", "triton"])
def test_kernels_written_unquoted_in_yaml(value):
    # YAML 1.1 reads `off` as false; the spec still means kernels off.
    spec = RunSpec.from_yaml(f"kernels: {value}\n")
    assert spec.kernels == value
    assert RunSpec.from_yaml(spec.to_yaml()).kernels == value


@pytest.mark.parametrize("text", ["kernels: on\n", "kernels: yes\n", "kernels: fast\n"])
def test_other_kernel_values_are_refused(text):
    with pytest.raises(SpecError, match="kernels = .*'auto', 'triton', 'torch' or 'off'"):
        RunSpec.from_yaml(text)


def test_the_readme_spec_example_is_a_valid_spec():
    import re

    readme = (ROOT / "README.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert examples, "README.md has no yaml example"
    for text in examples:
        spec = RunSpec.from_yaml(text)
        assert RunSpec.from_yaml(spec.to_yaml()) == spec


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="does not exist") as info:
        RunSpec.from_file(path)
    assert str(path) in str(info.value)


def test_several_bad_fields_are_all_reported():
    message = spec_error({"train": {"steps": 0, "batch_size": -1}, "adapter": {"name": "x"}})
    for path in ("train.steps", "train.batch_size", "adapter.name"):
        assert path in message


# --------------------------------------------------------------------------- updated / params


def test_updated_with_dotted_paths():
    spec = RunSpec()
    new = spec.updated(
        **{
            "train.steps": 11,
            "model.tiny.layers": 3,
            "kernels": "torch",
            "tracking.tags": {"x": "y"},
        }
    )
    assert (new.train.steps, new.model.tiny.layers, new.kernels, new.tracking.tags) == (
        11,
        3,
        "torch",
        {"x": "y"},
    )
    # Everything else is unchanged, and the original is untouched.
    assert (
        new.updated(
            **{
                "train.steps": spec.train.steps,
                "model.tiny.layers": spec.model.tiny.layers,
                "kernels": spec.kernels,
                "tracking.tags": {},
            }
        )
        == spec
    )
    assert spec.train.steps == TrainSpec().steps


def test_updated_validates():
    with pytest.raises(SpecError, match="train.steps"):
        RunSpec().updated(**{"train.steps": 0})
    with pytest.raises(SpecError, match="train.stpes"):
        RunSpec().updated(**{"train.stpes": 10})


@pytest.mark.parametrize("path", ["method.name", "train.steps.value", "objectives.0.weight"])
def test_updated_through_a_non_section_is_a_spec_error(path):
    with pytest.raises(SpecError, match=path.split(".")[0]):
        RunSpec().updated(**{path: 1})


def test_flat_params():
    spec = customised()
    params = spec.flat_params()
    for o in spec.objectives:
        assert params[f"objectives.{o.name}.direction"] == o.direction
        assert params[f"objectives.{o.name}.weight"] == str(o.weight)
    assert params["train.steps"] == str(spec.train.steps)
    assert params["model.tiny.hidden_size"] == str(spec.model.tiny.hidden_size)
    assert params["method.name"] == spec.method.name
    assert params["tracking.tags.on"] == "1.5"
    assert all(isinstance(v, str) for v in params.values())
    # Every leaf of every section is a param (tags add their own keys).
    sections = {
        "model": ModelSpec,
        "data": DataSpec,
        "adapter": type(spec.adapter),
        "method": type(spec.method),
        "optimizer": type(spec.optimizer),
        "train": TrainSpec,
        "eval": EvalSpec,
        "tracking": TrackingSpec,
    }
    for section, cls in sections.items():
        for name in cls.model_fields:
            if name in ("tiny", "tags", "scheduler"):
                continue
            assert f"{section}.{name}" in params
    assert params["train.scheduler.name"] == "cosine"
    assert params["optimizer.betas"] == "[0.8, 0.95]"


def test_objective_lookup():
    spec = RunSpec()
    first = spec.objectives[0]
    assert spec.objective(first.name) is first
    with pytest.raises(SpecError, match="no objective"):
        spec.objective("missing")


# --------------------------------------------------------------------------- fuzzing

FIELD_NAMES = sorted(
    {
        name
        for cls in (
            RunSpec,
            ModelSpec,
            TinyModelSpec,
            DataSpec,
            LoraAdapterParams,
            MultiObjectiveSFTParams,
            AdamParams,
            SGDParams,
            ObjectiveSpec,
            TrainSpec,
            EvalSpec,
            TrackingSpec,
        )
        for name in cls.model_fields
    }
)
CHOICES = sorted(
    {
        *registry.METHODS,
        *components.ADAPTERS,
        *components.OPTIMIZERS,
        *registry.TERMS,
        *TASKS,
        *components.SCHEDULERS,
        *registry.KERNEL_CHOICES,
        "min",
        "max",
        "32-true",
        "bf16-mixed",
        "metric:exact_match",
        "metric:eval_loss",
        "term:brevity",
        "cost:peak_mem_mb",
        "metric:",
        "cost:nope",
        "x.jsonl",
    }
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6) | st.integers(-2, 2)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(CHOICES)
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
objective_dicts = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", ""]) | values,
        "direction": st.sampled_from(["min", "max", "up"]),
    },
    optional={
        "source": st.sampled_from(CHOICES) | values,
        "term": st.sampled_from([*registry.TERMS, None, "nope"]) | values,
        "weight": st.floats(allow_nan=True, allow_infinity=True) | values,
        "reference": st.floats() | values,
    },
)
sections = st.dictionaries(
    st.sampled_from(sorted(RunSpec.model_fields)) | keys,
    st.dictionaries(keys, values, max_size=5) | values,
    max_size=6,
)
specs = (
    sections
    | st.builds(
        lambda base, objs: {**base, "objectives": objs},
        sections,
        st.lists(objective_dicts, max_size=3),
    )
    | values
)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_parse_returns_runspec_or_raises_spec_error(data):
    try:
        spec = RunSpec.parse(data)
    except SpecError as err:
        assert str(err)
        return
    assert isinstance(spec, RunSpec)
    # Whatever validates also round-trips exactly.
    assert RunSpec.from_yaml(spec.to_yaml()) == spec
    assert all(math.isfinite(o.weight) and o.weight >= 0 for o in spec.objectives)


# --------------------------------------------------------------------------- shorthand and plugins


def test_shorthand_names_mean_the_section_with_its_defaults():
    short = RunSpec.parse(
        {
            "model": "tiny",
            "data": "order",
            "method": "mo-sft",
            "adapter": "lora",
            "optimizer": "sgd",
        }
    )
    full = RunSpec.parse(
        {
            "model": {"name": "tiny"},
            "data": {"source": "order"},
            "method": {"name": "mo-sft"},
            "adapter": {"name": "lora"},
            "optimizer": {"name": "sgd"},
        }
    )
    assert short == full
    assert short.adapter.r == 8 and short.method.brevity_position_scale == 3.0
    assert RunSpec.from_yaml(short.to_yaml()) == short
    assert yaml.safe_load(short.to_yaml())["method"] == {
        "name": "mo-sft",
        "brevity_position_scale": 3.0,
    }


def test_method_and_adapter_settings_are_validated_by_their_own_models():
    message = spec_error(
        {
            "method": {"name": "mo-sft", "brevity_position_scale": 0, "beta": 1},
            "adapter": {"name": "full", "r": 4},
        }
    )
    assert "method.brevity_position_scale = 0: Input should be greater than 0" in message
    assert (
        "method.beta = 1: unknown field; check its spelling; allowed: brevity_position_scale, name"
        in message
    )
    assert "adapter.r = 4: unknown field; check its spelling; allowed: name" in message
    assert "method.name = 'dpo-typo'" in spec_error({"method": {"name": "dpo-typo"}})


def test_a_term_objective_must_name_a_term_of_the_method():
    message = spec_error(
        {"method": "sft", "objectives": [objective(source="term:brevity", term=None)]}
    )
    assert "method 'sft' has no term 'brevity'" in message
    spec = RunSpec.parse(
        {"method": "mo-sft", "objectives": [objective(source="term:brevity", term="answer")]}
    )
    assert spec.objectives[0].source == "term:brevity"


def test_reward_sources_name_registered_rewards():
    message = spec_error({"objectives": [objective(source="reward:nope", term=None)]})
    assert "reward:nope" in message and "register_reward" in message


# --------------------------------------------------------------------------- optimizer and schedule


def test_each_optimizer_has_its_own_settings_and_shorthand():
    sgd = RunSpec.parse({"optimizer": "sgd"})
    assert isinstance(sgd.optimizer, SGDParams)
    assert sgd.optimizer == RunSpec.parse({"optimizer": {"name": "sgd"}}).optimizer
    assert yaml.safe_load(sgd.to_yaml())["optimizer"] == {
        "name": "sgd",
        "lr": 3e-4,
        "weight_decay": 0.0,
        "momentum": 0.9,
    }
    adamw = RunSpec.parse({"optimizer": {"name": "adamw", "betas": [0.8, 0.9], "eps": 1e-6}})
    assert isinstance(adamw.optimizer, AdamParams)
    assert (adamw.optimizer.betas, adamw.optimizer.eps) == ((0.8, 0.9), 1e-6)
    for spec in (sgd, adamw):
        text = spec.to_yaml()
        assert RunSpec.from_yaml(text) == spec and RunSpec.from_yaml(text).to_yaml() == text
    assert RunSpec().optimizer == AdamParams(name="adamw")


def test_the_former_flat_optimizer_section_keeps_its_meaning():
    # A finished run's stored spec lists every field of the one section specs once had.
    stored = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999]}
    spec = RunSpec.parse({"optimizer": {**stored, "momentum": 0.9}})
    assert spec.optimizer == AdamParams(name="adamw", lr=1e-3)
    sgd = RunSpec.parse({"optimizer": {"name": "sgd", "momentum": 0.5, "betas": [0.9, 0.999]}})
    assert sgd.optimizer == SGDParams(name="sgd", momentum=0.5)
    # A setting the optimizer has no use for is an error once it differs from that default.
    message = spec_error({"optimizer": {"name": "sgd", "betas": [0.8, 0.95]}})
    assert "optimizer.betas = [0.8, 0.95]: unknown field" in message
    assert "allowed: lr, momentum, name, weight_decay" in message
    assert "optimizer.eps = 0: Input should be greater than 0" in spec_error(
        {"optimizer": {"name": "adam", "eps": 0}}
    )


def test_the_schedule_is_a_section_with_shorthand():
    short = RunSpec.parse({"train": {"scheduler": "cosine", "warmup_steps": 2}})
    full = RunSpec.parse({"train": {"scheduler": {"name": "cosine"}, "warmup_steps": 2}})
    assert short == full and short.train.scheduler.name == "cosine"
    text = short.to_yaml()
    assert yaml.safe_load(text)["train"]["scheduler"] == {"name": "cosine"}
    assert RunSpec.from_yaml(text) == short and RunSpec.from_yaml(text).to_yaml() == text
    assert RunSpec().train.scheduler.name == "constant"
    message = spec_error({"train": {"scheduler": {"name": "cosine", "cycles": 2}}})
    assert "train.scheduler.cycles = 2: unknown field" in message
    # A sweep sets the schedule by its dotted path, as it sets any other field.
    assert RunSpec().updated(**{"train.scheduler": "linear"}).train.scheduler.name == "linear"


# --------------------------------------------------------------------------- objective parts


@pytest.mark.parametrize(
    ("source", "direction", "kind", "name", "sign"),
    [
        ("metric:exact_match", "max", "metric", "exact_match", 1),
        ("metric:eval_loss", "min", "metric", "eval_loss", -1),
        ("term:brevity", "min", "term", "brevity", -1),
        ("cost:peak_mem_mb", "min", "cost", "peak_mem_mb", -1),
        ("reward:correct", "max", "reward", "correct", 1),
    ],
)
def test_an_objective_knows_its_kind_source_name_and_sign(source, direction, kind, name, sign):
    from workbench.spec.objective_source import direction_sign, parse_source

    o = ObjectiveSpec(name="x", direction=direction, source=source)
    assert (o.kind, o.source_name, o.sign) == (kind, name, sign)
    assert parse_source(source) == (kind, name) and direction_sign(direction) == sign
    # Derived, not stored: the YAML of an objective is what the user wrote.
    assert "kind" not in o.model_dump() and "sign" not in o.model_dump()


def test_an_optimizer_or_schedule_section_without_a_name_takes_the_default_choice():
    spec = RunSpec.parse({"optimizer": {"lr": 1e-3}, "train": {"scheduler": {}}})
    assert spec.optimizer == AdamParams(name="adamw", lr=1e-3)
    assert spec.train.scheduler.name == "constant"
