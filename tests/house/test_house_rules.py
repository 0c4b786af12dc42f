"""The house rules, checked with the same tools a developer runs: ruff and import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_lint_passes():
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "workbench", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
