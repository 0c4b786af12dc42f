"""The method registry: lazy module strings resolve, terms are declared, and the spec layer
stays free of torch."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from workbench.spec import registry

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
    for table in (registry.METHODS, registry.ADAPTERS, registry.OPTIMIZERS, registry.TERMS):
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
