"""What the tests share, defined once: an isolated cache and store per test session, the
fast tiny base, the stores of a test or of a module, the CLI in a fresh interpreter, polling.

Tests never touch the user's cache or the checkout's mlruns/: WORKBENCH_CACHE points at a
session temp folder (the tiny base is built once per session and reused), and every test
that tracks runs gets its own sqlite store: ``store_uri`` for one test, ``own_store`` for the
runs of a module-scoped fixture. Fixtures of one folder only live in that folder's
conftest.py (tests/kernels/: the seeds and Triton's interpreter).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workbench.models.bases import FAST_TINY_SHAPE

# The root of the checkout (README.md, docs/, notebooks/, scripts/ ...).
ROOT = Path(__file__).resolve().parents[1]

# The environment's TRITON_INTERPRET before any conftest ran. Triton picks its interpreter
# from it when a kernel is defined and reads some settings when it is first imported, and
# any test module collected before tests/kernels/ may import it (through lightning or the
# kernels), so it is set here, before collection starts, and taken back once collection is
# done; the kernel tests set it again while they run (tests/kernels/conftest.py), and later
# tests' processes do not inherit it.
TRITON_INTERPRET_AT_START = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_finish(session):
    # Every test module, and the kernels they import, is imported by now.
    if TRITON_INTERPRET_AT_START is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = TRITON_INTERPRET_AT_START


# A small, quickly pretrained tiny base for tests that only need *a* model (seconds to build):
# the built-in `tiny-fast` base's shape.
FAST_TINY = dict(FAST_TINY_SHAPE)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("workbench-cache")


@pytest.fixture(scope="session", autouse=True)
def isolated_env(session_cache, tmp_path_factory):
    """Session-wide, so module- and session-scoped fixtures see it too."""
    store = tmp_path_factory.mktemp("session-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CACHE", str(session_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_VERBOSITY", "error")
        # Nothing a test does lands in the checkout's mlruns/ by accident.
        patch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(store))
        yield


# The test that builds the full-size tiny base (the spec's default) for the whole session.
BUILD_TEST = "test_tiny_base_build.py::test_the_default_tiny_base_is_built_once_per_session"


@pytest.fixture(scope="session")
def default_tiny_base(isolated_env, session_cache) -> Path:
    """The full-size tiny base (``model: tiny`` with default settings), built once per session
    into the session cache; every test that trains on the default base uses this fixture, so
    none of them pays for (or times out during) the cold build. Returns its cache folder."""
    from workbench.models import tiny
    from workbench.spec.run_spec import ModelSpec

    spec = ModelSpec().tiny
    tiny.build_or_load(spec, log=lambda *a: None)
    return tiny.cached_path(spec)


@pytest.fixture(scope="session")
def real_model_folder(isolated_env) -> Path:
    """SmolLM2-135M-Instruct (``model: smollm2-135m-instruct``), converted from its wheel once
    per session into the session cache (about 30 s); returns the converted folder. The wheel is
    part of the dev set-up, so a missing wheel fails here rather than skipping."""
    from workbench.models.bases import BUILTIN_BASES

    return BUILTIN_BASES["smollm2-135m-instruct"].folder(log=lambda *a: None)


def pytest_collection_modifyitems(session, config, items):
    """Run the cold build of the default tiny base first, in its own test with its own
    generous deadline (tests/test_tiny_base_build.py), whenever a selected test needs it."""
    build = [item for item in items if item.nodeid.endswith(BUILD_TEST)]
    if build and any(
        "default_tiny_base" in getattr(item, "fixturenames", ())
        for item in items
        if item is not build[0]
    ):
        items.remove(build[0])
        items.insert(0, build[0])


def wait_until(condition: Callable[[], object], seconds: float, what: str, poll_s: float = 0.2):
    """Poll ``condition()`` until it returns something truthy (returned); fail naming ``what``
    after ``seconds``. Deadlines are sized from a measurement on 2 idle cores with a wide
    margin for a loaded machine (say which in a comment where it is called); never sleep a
    fixed time instead of waiting on the condition."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:g} s")
        time.sleep(poll_s)


def sqlite_uri(folder: Path) -> str:
    """The URI of a sqlite MLflow store kept in ``folder`` (its ``mlflow.db``)."""
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def store_uri(tmp_path, monkeypatch) -> str:
    """A fresh store for one test: MLFLOW_TRACKING_URI points at it; returns its URI."""
    (tmp_path / "store").mkdir()
    uri = sqlite_uri(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def fast_spec(**sections) -> dict:
    """A spec dict on the fast tiny base; sections override/extend the defaults."""
    spec = {
        "model": {"name": "tiny", "tiny": dict(FAST_TINY)},
        "data": {"source": "order", "train_size": 200, "eval_size": 16},
        "train": {"steps": 10, "batch_size": 8, "eval_every": 5, "log_every": 1},
        "eval": {"max_new_tokens": 14, "samples_logged": 2},
        "tracking": {"experiment": "tests"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def interruptible() -> None:
    """A ``preexec_fn`` giving a child Ctrl-C's default back, for tests that send it SIGINT: a
    suite started in the background runs with SIGINT ignored (a shell ignores it for ``&``
    jobs), every child would inherit that, and Python leaves an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None):
    """Run the `workbench` CLI in a fresh interpreter (how users run it)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )


@contextlib.contextmanager
def own_store(tmp_path_factory, name: str) -> Iterator[str]:
    """A fresh sqlite store for the runs of a module-scoped fixture: MLFLOW_TRACKING_URI points
    at it while the block runs (``store_uri`` does the same for one test); yields its URI.
    The store's folder is a new temp folder named after ``name``."""
    uri = sqlite_uri(tmp_path_factory.mktemp(name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri
