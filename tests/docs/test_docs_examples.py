"""The examples in README.md and docs/*.md run as written: the extension examples (each in a
fresh interpreter, as a user would paste it), every example spec (a ```yaml block) for a few
steps on the tiny base, the README's study config for one short trial, and every link
between the documents reaches a file and a heading that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, sqlite_uri

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.S)
YAML_BLOCK = re.compile(r"^```yaml(?P<tag>[^\n]*)\n(?P<text>.*?)^```", re.S | re.M)
# ```yaml blocks: untagged ones are whole specs a user runs; the others say what they are.
TAGS = {
    "": "a run spec",
    "study-config": "a spec with a search section",
    "train-section": "one section of a spec",
}
# What the few-step runs change: the length, the held-out evaluation's size, where runs go.
FEW_STEPS = 2
HELD_OUT = 4


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def examples(path: Path) -> list[tuple[str, str]]:
    return [(m["name"], m["code"]) for m in MARKER.finditer(path.read_text(encoding="utf-8"))]


def yaml_blocks(tag: str | None = None) -> list[tuple[str, int, str]]:
    """(document, block number in it, text) of each ```yaml block (with `tag`, if given)."""
    found = []
    for path in DOCS:
        for number, match in enumerate(YAML_BLOCK.finditer(path.read_text(encoding="utf-8"))):
            if tag is None or match["tag"].strip() == tag:
                found.append((name(path), number, match["text"]))
    return found


CASES = [
    (doc, example, code)
    for path in DOCS
    for doc in [name(path)]
    for example, code in examples(path)
]
SPECS = yaml_blocks("")


def test_the_extension_examples_are_where_the_docs_point():
    assert {(doc, example) for doc, example, _ in CASES} >= {
        ("docs/python.md", "extending"),
        ("docs/concepts.md", "extending"),
    }


@pytest.mark.parametrize(("doc", "example", "code"), CASES, ids=[f"{d}:{n}" for d, n, _ in CASES])
def test_example_runs(doc, example, code, tmp_path):
    # Each example must leave a validated spec naming what it registered.
    check = (
        "\nassert spec.method.name in workbench.spec.registry.METHODS\n"
        "assert not workbench.spec.registry.METHODS[spec.method.name].builtin\n"
        "print('example ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code + check],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "example ok" in result.stdout


def test_every_yaml_block_says_what_it_is():
    tags = {
        match["tag"].strip()
        for path in DOCS
        for match in YAML_BLOCK.finditer(path.read_text(encoding="utf-8"))
    }
    assert tags <= set(TAGS), f"unknown ```yaml tags {tags - set(TAGS)}; known: {TAGS}"
    assert {doc for doc, _, _ in SPECS} >= {"README.md", "docs/running.md", "docs/methods.md"}


@pytest.mark.parametrize(
    ("doc", "number", "text"), yaml_blocks("train-section"), ids=lambda value: str(value)[:20]
)
def test_a_section_block_is_a_valid_section(doc, number, text):
    from workbench.spec.run_spec import RunSpec

    section = yaml.safe_load(text)
    assert set(section) == {"train"}
    RunSpec.parse(section)


def few_steps(spec, tmp_path):
    return spec.updated(
        **{
            "train.steps": FEW_STEPS,
            "train.eval_every": FEW_STEPS,
            "data.eval_size": HELD_OUT,
            "tracking.uri": sqlite_uri(tmp_path),
            "tracking.log_model": False,
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "number", "text"), SPECS, ids=[f"{d}:{n}" for d, n, _ in SPECS])
def test_example_spec_runs_for_a_few_steps(doc, number, text, tmp_path, default_tiny_base):
    import workbench
    from workbench.spec.run_spec import RunSpec

    spec = RunSpec.from_yaml(text)
    result = workbench.run(few_steps(spec, tmp_path), log=lambda *a: None)
    assert result.status == "FINISHED", (doc, number, result.status)
    assert set(result.objectives) == {o.name for o in spec.objectives} or not spec.objectives
    assert [step for step, _ in result.trajectory] == [0, FEW_STEPS]


@pytest.mark.slow
def test_the_readme_study_config_runs_one_short_trial(tmp_path, default_tiny_base):
    import workbench
    from workbench.studies.search.space import load_config

    [(_, _, text)] = yaml_blocks("study-config")
    path = tmp_path / "study.yaml"
    path.write_text(text, encoding="utf-8")
    spec, settings = load_config(path)
    result = workbench.run_search(
        few_steps(spec, tmp_path), settings, trials=1, workers=1, log=lambda *a: None
    )
    assert len(result.trials) == 1


LINK = re.compile(r"\]\((?!https?://)(?P<target>[^)#\s]*)(?:#(?P<anchor>[^)\s]+))?\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (code blocks left out)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_links_reach_files_and_headings_that_exist(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for match in LINK.finditer(text):
        target = (path.parent / match["target"]).resolve() if match["target"] else path
        assert target.exists(), f"{name(path)}: {match[0]} points at a missing file"
        if match["anchor"] and target.suffix == ".md":
            assert match["anchor"] in anchors(target), f"{name(path)}: {match[0]}: no such heading"
