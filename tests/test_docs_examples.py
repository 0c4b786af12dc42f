"""The README's and docs/concepts.md's extension examples run as written (each in a fresh
interpreter, as a user would paste it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.S)


def examples(path: Path) -> list[tuple[str, str]]:
    return [(m["name"], m["code"]) for m in MARKER.finditer(path.read_text(encoding="utf-8"))]


CASES = [(path.name, name, code) for path in (ROOT / "README.md", ROOT / "docs" / "concepts.md")
         for name, code in examples(path)]


def test_both_documents_carry_an_extension_example():
    assert {(doc, name) for doc, name, _ in CASES} >= {("README.md", "extending"), ("concepts.md", "extending")}


@pytest.mark.parametrize(("doc", "name", "code"), CASES, ids=[f"{d}:{n}" for d, n, _ in CASES])
def test_example_runs(doc, name, code, tmp_path):
    # Each example must leave a validated spec naming what it registered.
    check = ("\nassert spec.method.name in workbench.registry.METHODS\n"
             "assert not workbench.registry.METHODS[spec.method.name].builtin\n"
             "print('example ok')\n")
    result = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "example ok" in result.stdout
