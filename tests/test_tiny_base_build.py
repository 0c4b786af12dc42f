"""The cold build of the full-size tiny base, once per session, as its own early step.

tests/conftest.py puts this test first whenever a selected test uses ``default_tiny_base``,
so the build (about 55 s on 2 idle cores, measured up to about 375 s beside a test suite and
two other runs) has a deadline of its own, and the tests that train on the default base
(the demo, ...) find it cached and are timed on their own work only.
"""

from __future__ import annotations

import json

import pytest

from workbench import tiny
from workbench.spec import ModelSpec


@pytest.mark.timeout(1800)  # the cold build on a loaded machine; pyproject's 900 s is for the rest
def test_the_default_tiny_base_is_built_once_per_session(default_tiny_base, session_cache):
    spec = ModelSpec().tiny
    assert default_tiny_base == tiny.cached_path(spec)
    assert default_tiny_base.is_relative_to(session_cache)  # never the user's cache
    info = json.loads((default_tiny_base / tiny.BASE_INFO_FILE).read_text())
    assert info["key"] == tiny.cache_key(spec) and info["spec"] == spec.model_dump(mode="json")
    assert list(default_tiny_base.glob("*.safetensors"))
    assert set(info["exact_match"]) == {name for name, task in tiny.TASKS.items() if task.pretrain}
