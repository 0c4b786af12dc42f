"""The house rules, checked with the same tools a developer runs: ruff, import-linter and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def test_ruff_lint_passes():
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "workbench", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", "workbench", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_type_checks_strictly(tmp_path):
    # pyproject.toml's [tool.mypy] names the core (spec, losses, fronts, kernels) and its
    # strictness. A fresh cache each time: the cold run is what CI pays (8 s of CPU; 24 s on
    # 2 cores loaded 2x over; torch's own annotations are most of it).
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_layers_contract_is_kept():
    result = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kernels_import_nothing_else_of_the_workbench():
    for path in (ROOT / "workbench" / "kernels").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import workbench", "from workbench")):
                assert stripped.startswith(
                    ("from workbench.kernels", "import workbench.kernels")
                ), (path, line)
