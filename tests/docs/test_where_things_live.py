"""docs/concepts.md's "Where things live" stays true: every path it names exists, and every
folder of the package is in it."""

from __future__ import annotations

import re

from tests.conftest import ROOT

SECTION = "## Where things live"


def where_things_live() -> str:
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert SECTION + "\n" in text, f"docs/concepts.md has no section {SECTION!r}"
    section = text.split(SECTION + "\n", 1)[1]
    return re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]


def named_paths(section: str) -> list[str]:
    """The code spans that are paths from the checkout's root: they hold a slash and no
    placeholder (``<family>``)."""
    spans = re.findall(r"`([^`\s]+)`", section)
    return [s for s in spans if "/" in s and "<" not in s]


def test_every_path_the_section_names_exists():
    paths = named_paths(where_things_live())
    assert len(paths) >= 20, paths  # the section names the folders and the run's path
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/concepts.md, {SECTION}, names paths that do not exist: {missing}"


def test_every_folder_of_the_package_is_in_the_section():
    named = set(named_paths(where_things_live()))
    folders = sorted(
        f"workbench/{d.name}/"
        for d in (ROOT / "workbench").iterdir()
        if d.is_dir() and (d / "__init__.py").exists()
    )
    assert folders, "no package folders found"
    left_out = [f for f in folders if f not in named]
    assert not left_out, f"docs/concepts.md, {SECTION}, does not name {left_out}"


def test_the_section_gives_each_folder_its_layer():
    # One line each: "- `workbench/<folder>/` (layer N): what it holds".
    section = where_things_live()
    layers = dict(re.findall(r"^- `workbench/(\w+)/` \(layer (\d)\)", section, re.M))
    contract = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = contract.split("layers = [", 1)[1].split("]", 1)[0]
    # The contract lists the layers highest first; the docs number them lowest first.
    rows = [re.findall(r"workbench\.(\w+)", line) for line in block.splitlines()]
    rows = [row for row in rows if row]
    expected = {name: str(len(rows) - i) for i, row in enumerate(rows) for name in row}
    assert layers == expected
