"""The method registry: lazy module strings resolve, terms are declared, and the spec layer
stays free of torch."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from workbench.spec import components, registry

HEAVY = (
    "torch",
    "lightning",
    "transformers",
    "workbench.methods.base",
    "workbench.running.pipeline",
)


def run_python(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


BUILTIN_METHODS = sorted(m for m, info in registry.METHODS.items() if info.builtin)


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_method_module_string_imports_a_class_with_compute_losses(name):
    info = registry.METHODS[name]
    assert info.name == name
    module_name, sep, class_name = info.module.partition(":")
    assert sep == ":" and module_name and class_name and ":" not in class_name
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type)
    assert callable(getattr(cls, "compute_losses", None))
    assert registry.load_module_class(name) is cls


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_method_terms_are_declared(name):
    info = registry.METHODS[name]
    assert info.terms, name
    assert len(set(info.terms)) == len(info.terms)
    for term in info.terms:
        assert term in registry.TERMS, (name, term)
    assert info.formula and info.summary and info.paper and info.family


def test_tables_are_keyed_by_their_names():
    tables = (components.ADAPTERS, components.OPTIMIZERS, components.SCHEDULERS)
    for table in (registry.METHODS, *tables, registry.TERMS):
        for key, value in table.items():
            assert value.name == key
    assert registry.choices({"b": 1, "a": 2}) == "a, b"


def test_spec_and_registry_do_not_import_torch():
    loaded = run_python(
        "import json, sys\n"
        "import workbench.spec.run_spec, workbench.spec.registry\n"
        "spec = workbench.spec.run_spec.RunSpec()\n"
        f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n"
    )
    assert loaded == {m: False for m in HEAVY}


def test_public_api_is_lazy():
    result = run_python(
        "import json, sys\n"
        "import workbench\n"
        "before = 'workbench.spec.run_spec' in sys.modules\n"
        "RunSpec = workbench.RunSpec\n"
        "from workbench.spec.run_spec import RunSpec as direct\n"
        "ok = RunSpec is direct and RunSpec().method.name == 'mo-sft'\n"
        "try:\n"
        "    workbench.no_such_thing\n"
        "    missing = False\n"
        "except AttributeError:\n"
        "    missing = True\n"
        "print(json.dumps({'before': before, 'ok': ok, 'missing': missing,\n"
        "                  'listed': 'RunSpec' in dir(workbench),\n"
        f"                  'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    assert result == {"before": False, "ok": True, "missing": True, "listed": True, "heavy": []}


LOSS_METHODS = sorted(m for m in BUILTIN_METHODS if registry.METHODS[m].loss is not None)


def test_the_preference_methods_are_their_losses():
    assert set(LOSS_METHODS) >= {"dpo", "ipo", "hinge", "robust-dpo", "rpo", "simpo", "orpo"}
    assert set(LOSS_METHODS) >= {"tpo", "asft", "modpo", "kto"}


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_a_method_s_loss_takes_its_declared_inputs_and_its_parameters(name):
    """The generic module calls ``loss(**inputs, **params.loss_kwargs())``: every declared
    input is offered by the row kind and, with every parameter, is an argument of the loss."""
    import inspect

    info = registry.METHODS[name]
    kind = registry.ROW_KINDS[info.row_kind]
    assert info.loss_inputs and set(info.loss_inputs) <= set(kind.loss_inputs)
    loss = registry.resolve(info.loss)
    arguments = inspect.signature(loss).parameters
    fields = set(info.params.model_fields) - {"name"}
    assert set(info.loss_inputs) | fields <= set(arguments), (name, loss.__name__)
    if info.module == kind.loss_module:
        assert set(info.terms) == set(kind.loss_terms)
    reads_reference = any(i.startswith("ref_") or i == "kl" for i in info.loss_inputs)
    assert reads_reference == (info.reference != "none"), name


def test_every_reference_need_names_its_strategy_lazily():
    for name, kind in registry.REFERENCE_KINDS.items():
        assert kind.name == name and kind.summary
        assert isinstance(kind.strategy, str) and kind.strategy.startswith("workbench.methods.")


def test_register_method_checks_a_loss_s_inputs_and_reference():
    def loss(*, policy_chosen_logps, policy_rejected_logps):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="not offered by row kind 'preference'"):
        registry.register_method(
            "bad-input-test", loss=loss, loss_inputs=("logits",), row_kind="preference"
        )
    with pytest.raises(ValueError, match="reference is 'none'"):
        registry.register_method(
            "bad-reference-test",
            loss=loss,
            loss_inputs=("policy_chosen_logps", "ref_chosen_logps"),
            row_kind="preference",
        )
    with pytest.raises(ValueError, match="not its loss_inputs"):
        registry.register_method("no-inputs-test", loss=loss, row_kind="preference")
    with pytest.raises(ValueError, match="no generic loss module"):
        registry.register_method("sft-loss-test", loss=loss, loss_inputs=("x",))
    with pytest.raises(ValueError, match="needs a loss"):
        registry.register_method("nothing-test")
    with pytest.raises(ValueError, match="unknown reference need 'copy'"):
        registry.register_method("copy-test", loss=loss, row_kind="preference", reference="copy")
    for name in ("bad-input-test", "bad-reference-test", "no-inputs-test", "sft-loss-test"):
        assert name not in registry.METHODS
    info = registry.register_method(
        "pair-loss-test",
        loss=loss,
        loss_inputs=("policy_chosen_logps", "policy_rejected_logps"),
        row_kind="preference",
    )
    try:
        assert info.module == registry.ROW_KINDS["preference"].loss_module
        assert info.terms == registry.ROW_KINDS["preference"].loss_terms
    finally:
        del registry.METHODS["pair-loss-test"]
