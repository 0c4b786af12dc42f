"""The suite itself: settings one part of it needs do not leak into the rest, and a kernel
test's random seed is in its id and in its failure report, ready to replay."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests import conftest
from tests.conftest import ROOT


def test_triton_interpret_does_not_leak_out_of_the_kernel_tests():
    # tests/kernels/ runs before this file: what it set must be back as it was, so the
    # background runs, CLI calls and notebooks of later tests are not interpreted by Triton.
    assert os.environ.get("TRITON_INTERPRET") == conftest.TRITON_INTERPRET_AT_START


FAILING_KERNEL_TEST = """
def test_a_kernel(kernel_seed):
    assert kernel_seed < 0, "a failure"
"""

KERNEL_CONFTEST = """
from tests.kernels.conftest import (  # noqa: F401  (hooks and fixture, as in tests/kernels)
    kernel_seed, pytest_generate_tests, pytest_runtest_makereport,
)
"""


def _run_failing_kernel_test(tmp_path: Path, seed: str | None) -> str:
    (tmp_path / "conftest.py").write_text(KERNEL_CONFTEST)
    (tmp_path / "test_kernel_seed.py").write_text(FAILING_KERNEL_TEST)
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_TEST_SEED"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if seed is not None:
        env["WORKBENCH_TEST_SEED"] = seed
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rf",
            str(tmp_path / "test_kernel_seed.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_a_failing_kernel_test_names_its_seed_and_how_to_replay_it(tmp_path):
    (tmp_path / "fresh").mkdir()
    out = _run_failing_kernel_test(tmp_path / "fresh", None)
    seed = re.search(r"FAILED \S+::test_a_kernel\[seed=(\d+)\]", out)
    assert seed, out[-3000:]
    seed = seed[1]
    assert f"WORKBENCH_TEST_SEED={seed} python -m pytest '" in out, out[-3000:]
    # The printed command replays the same seed, under the same test id.
    (tmp_path / "replay").mkdir()
    again = _run_failing_kernel_test(tmp_path / "replay", seed)
    assert f"test_a_kernel[seed={seed}]" in again and f"WORKBENCH_TEST_SEED={seed}" in again
