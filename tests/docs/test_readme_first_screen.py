"""The README's first screen: what a newcomer reads before the table of contents holds the two
set-up commands (the ones CI runs), the real chat model, how to open the notebooks, a DPO run
and the front."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = "scripts/setup.sh dev && .venv/bin/workbench demo"
TESTS = ".venv/bin/python -m pytest"
# A first screen: what fits before the table of contents, kept short enough to read at once.
FIRST_SCREEN_MAX_LINES = 70


def first_screen() -> str:
    head, found, _ = README.partition("\n## Contents\n")
    assert found, "the README has no '## Contents' section"
    return head


def code_blocks(text: str, language: str) -> list[str]:
    return [m[1] for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M)]


def test_the_first_screen_is_short():
    assert len(first_screen().splitlines()) <= FIRST_SCREEN_MAX_LINES


def test_the_first_screen_gives_the_two_commands_each_in_its_own_block():
    blocks = [block.strip() for block in code_blocks(first_screen(), "bash")]
    assert blocks[:2] == [SETUP, TESTS]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "scripts/setup.sh dev" in ci and TESTS in ci


def test_the_first_screen_names_the_next_things_to_try():
    screen = first_screen()
    section = screen[screen.index("## Next things to try") :]
    # The real model comes right after the demo.
    first = section.split("**2.")[0]
    assert "`.venv/bin/workbench run examples/real_sft_lora.yaml`" in first
    assert "SmolLM2-135M-Instruct" in first and (ROOT / "examples/real_sft_lora.yaml").is_file()
    assert "`.venv/bin/workbench lab`" in section and "notebooks/" in section
    assert "`.venv/bin/workbench run dpo.yaml`" in section
    [spec] = code_blocks(section, "yaml")
    assert re.search(r"^method: \{name: dpo\b", spec, re.M)
    assert "`.venv/bin/workbench front --experiment demo`" in section


def test_the_contents_link_every_page_under_docs():
    contents = README.partition("\n## Contents\n")[2]
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", contents))
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert linked == pages
    assert "(BENCHMARKS.md)" in contents
