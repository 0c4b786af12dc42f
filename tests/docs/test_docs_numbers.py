"""Counts, lists and numbers the README and docs/ state are the ones the code gives: the method
list against the registry, the merge methods, builders, tasks, rewards, commands and
notebooks, the example validation error as the spec validation writes it, and the tiny
base's scores (which differ by machine: the docs say so and give them per machine).
The demo's table is checked in tests/test_demo_end_to_end.py."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from tests.conftest import ROOT
from workbench.models import tiny
from workbench.spec import components, registry
from workbench.spec.errors import SpecError
from workbench.spec.run_spec import RunSpec

README = (ROOT / "README.md").read_text(encoding="utf-8")
RUNNING = (ROOT / "docs" / "running.md").read_text(encoding="utf-8")
METHODS_DOC = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
NUMBER_WORDS = {
    "five": 5,
    "six": 6,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "seventeen": 17,
}
HELDOUT_PROMPTS = 48


def stated_count(text: str, noun: str) -> int:
    """The number before `noun` in `text` ('17 methods', 'ten ways to merge')."""
    match = re.search(rf"\b(\d+|{'|'.join(NUMBER_WORDS)})\s+{noun}", text)
    assert match, f"no count of {noun!r} stated"
    word = match[1]
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([\w-]+)`", text))


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


@pytest.fixture
def builtin_methods_only(monkeypatch):
    """The registry as a fresh process has it: methods other tests registered in this process
    (a plugin's `unlikelihood-test`) are not the workbench's, and the docs do not list them."""
    for name, info in list(registry.METHODS.items()):
        if not info.builtin:
            monkeypatch.delitem(registry.METHODS, name)


def test_the_readme_counts_are_the_codes(builtin_methods_only):
    from workbench.data.tasks import TASKS
    from workbench.fronts.builders import BUILDERS
    from workbench.merging.catalog import METHODS as MERGES
    from workbench.spec import components

    intro = README.partition("\n## Start here")[0]
    assert stated_count(intro, "methods") == len(registry.METHODS)
    assert stated_count(intro, "ways to merge") == len(MERGES)
    assert stated_count(intro, "ways\\s+to build a front") == len(BUILDERS)
    assert stated_count(intro, "teaching notebooks") == len(
        list((ROOT / "notebooks").glob("*.ipynb"))
    )
    assert stated_count(README, "built-in tasks") == len(TASKS)
    assert stated_count(intro, "adapters") == len(components.ADAPTERS)
    assert stated_count(intro, "data selectors") == len(components.SELECTORS)


@pytest.mark.parametrize("doc", ["README.md", "docs/methods.md"])
def test_the_method_tables_list_every_registered_method(doc, builtin_methods_only):
    text = (ROOT / doc).read_text(encoding="utf-8")
    heading, column = ("## Methods", 1) if doc == "README.md" else ("## The methods", 0)
    rows = [
        line.strip("|").split("|")
        for line in section(text, heading).splitlines()
        if line.startswith("|")
    ]
    listed = [name for row in rows[2:] for name in re.findall(r"`([\w-]+)`", row[column])]
    assert sorted(listed) == sorted(registry.METHODS)


def test_the_merge_methods_listed_are_the_catalogs():
    from workbench.merging.catalog import METHODS as MERGES

    for text in (section(README, "## Methods"), section(METHODS_DOC, "## Merging models")):
        names = re.findall(r"`([\w.-]+)`", text)
        inside = [i for i, name in enumerate(names) if name in MERGES]
        # The list: from its first merge method to its last.
        listed = names[inside[0] : inside[-1] + 1]
        assert listed == list(MERGES)


def test_the_builders_listed_are_the_registrys():
    from workbench.fronts.builders import BUILDERS

    table = section(METHODS_DOC, "## Five ways to build a front")
    rows = re.findall(r"^\| `([\w-]+)` \|", table, re.M)
    assert rows == list(BUILDERS)


def test_the_rewards_adapters_optimizers_and_schedules_listed_are_the_registries():
    from workbench.objectives.rewards import BUILTIN

    rewards = section(RUNNING, "## Built-in rewards")
    assert sorted(re.findall(r"`(\w+)`(?= \(| and `)", rewards)) == sorted(BUILTIN)
    fields = section(RUNNING, "## A run spec, field by field")
    for names, kind in (
        (components.ADAPTERS, "Adapters are"),
        (components.OPTIMIZERS, "optimizers"),
        (components.SCHEDULERS, "schedules"),
    ):
        sentence = re.search(rf"{kind} ([^;.]*)", fields)[1]
        assert backticked(sentence) == set(names), (kind, sentence)


def test_the_command_list_is_the_parsers():
    from workbench.cli.main import build_parser

    [commands] = [
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    block = section(RUNNING, "## Command line").split("```")[1]
    assert sorted(re.findall(r"^workbench (\w+)", block, re.M)) == sorted(commands)


def test_the_readme_error_example_is_what_validation_says(builtin_methods_only):
    block = re.search(r"```\n(error: invalid run spec:\n.*?)```", README, re.S)
    assert block, "the README shows no validation error"
    bad = {
        "method": "dpo-typo",
        "objectives": [
            {
                "name": "correctness",
                "direction": "max",
                "source": "metric:prefix_accuracy",
                "weight": -1,
            }
        ],
    }
    with pytest.raises(SpecError) as info:
        RunSpec.parse(bad)
    assert block[1].strip() == f"error: {info.value}"


def stated_base_scores() -> dict[str, dict[str, float]]:
    """{machine: {task: exact match}} from docs/running.md's table of the tiny base's scores."""
    part = section(RUNNING, "## The tiny base model, and why its scores differ by machine")
    lines = [line for line in part.splitlines() if line.startswith("|")]
    tasks = [cell.strip() for cell in lines[0].strip("|").split("|")][1:]
    return {
        cells[0]: dict(zip(tasks, map(float, cells[1:])))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }


def test_the_docs_say_where_the_base_scores_are_kept():
    part = section(RUNNING, "## The tiny base model, and why its scores differ by machine")
    assert f"`{tiny.BASE_INFO_FILE}`" in part and "`BUILD_THREADS`" in part
    assert hasattr(tiny, "BUILD_THREADS")


def test_the_base_scores_stated_are_scores_the_build_can_give(default_tiny_base):
    """Each machine's row is a possible measurement (a share of the 48 held-out prompts, the
    tasks the build measures); what holds on every machine holds on this one."""
    measured = json.loads((default_tiny_base / tiny.BASE_INFO_FILE).read_text())["exact_match"]
    stated = stated_base_scores()
    assert len(stated) >= 2
    for scores in stated.values():
        assert set(scores) == set(measured)
        for value in scores.values():
            assert (
                min(abs(value - k / HELDOUT_PROMPTS) for k in range(HELDOUT_PROMPTS + 1)) <= 0.005
            )
    # "arithmetic and sort start low ... order starts high", here too (`reverse` does not
    # on every machine: the docs say so).
    assert all(measured[task] < 0.5 for task in ("arithmetic", "sort")), measured
    assert measured["order"] > 0.5, measured
