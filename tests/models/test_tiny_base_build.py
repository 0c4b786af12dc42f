"""The cold build of the full-size tiny base, once per session, as its own early step.

tests/conftest.py puts this test first whenever a selected test uses ``default_tiny_base``,
so the build (about 55 s on 2 idle cores, measured up to about 375 s beside a test suite and
two other runs) has a deadline of its own, and the tests that train on the default base
(the demo, ...) find it cached and are timed on their own work only.
"""

from __future__ import annotations

import json

import pytest

from workbench.models import tiny
from workbench.spec.run_spec import ModelSpec


@pytest.mark.timeout(1800)  # the cold build on a loaded machine; pyproject's 900 s is for the rest
def test_the_default_tiny_base_is_built_once_per_session(default_tiny_base, session_cache):
    spec = ModelSpec().tiny
    assert default_tiny_base == tiny.cached_path(spec)
    assert default_tiny_base.is_relative_to(session_cache)  # never the user's cache
    info = json.loads((default_tiny_base / tiny.BASE_INFO_FILE).read_text())
    assert info["key"] == tiny.cache_key(spec) and info["spec"] == spec.model_dump(mode="json")
    assert list(default_tiny_base.glob("*.safetensors"))
    assert set(info["exact_match"]) == {name for name, task in tiny.TASKS.items() if task.pretrain}


def test_the_base_is_the_same_whatever_threads_the_caller_has(tmp_path, monkeypatch):
    """Torch splits reductions by thread count, so a base pretrained on one thread differed
    from one pretrained on two (held-out `reverse` 0.667 against 0.167 on the default base).
    The build runs on ``tiny.BUILD_THREADS`` whatever the caller set, and gives the caller its
    own count back: a small base built under 1 and under 3 caller threads equals the one built
    under ``BUILD_THREADS``, weight for weight."""
    import torch
    from safetensors.torch import load_file

    from tests.conftest import FAST_TINY
    from workbench.spec.run_spec import TinyModelSpec

    spec = TinyModelSpec(**{**FAST_TINY, "pretrain_steps": 20})
    # The held-out scoring after pretraining (48 generations per task) is not what is compared.
    monkeypatch.setattr(tiny, "base_exact_match", lambda model, tokenizer: {})
    built = {}
    before = torch.get_num_threads()
    try:
        for threads in (tiny.BUILD_THREADS, 1, 3):
            monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / f"threads-{threads}"))
            torch.set_num_threads(threads)
            tiny.build_or_load(spec, log=lambda *a: None)
            assert torch.get_num_threads() == threads  # the caller's count is given back
            built[threads] = load_file(next(tiny.cached_path(spec).glob("*.safetensors")))
    finally:
        torch.set_num_threads(before)
    reference = built[tiny.BUILD_THREADS]
    for threads in (1, 3):
        assert reference.keys() == built[threads].keys()
        for name in reference:
            assert torch.equal(reference[name], built[threads][name]), (threads, name)


def test_workbench_prepare_builds_the_base_once_then_finds_it(tmp_path):
    """`workbench prepare` before a class: the first call builds the base a spec names, the
    second finds it in the cache and says it is ready without building."""
    import yaml

    from tests.conftest import fast_spec, run_cli

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(fast_spec()))
    env = {"WORKBENCH_CACHE": str(tmp_path / "cache")}
    first = run_cli("prepare", str(spec_path), env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    lines = first.stdout.splitlines()
    assert lines[0].startswith("Building the tiny base model (once; cached in ")
    assert any(line.startswith("  pretraining step 60/60  loss ") for line in lines)
    ready = [line for line in lines if line.startswith("base model 'tiny' ready: ")]
    assert len(ready) == 1 and " parameters (" in ready[0]
    assert lines[-1].startswith("held-out exact match per task: arithmetic ")
    second = run_cli("prepare", str(spec_path), env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Building" not in second.stdout
    # The same base: the same parameter count, without a build line before it.
    assert second.stdout.splitlines()[0].split(" (")[0] == ready[0].split(" (")[0]
