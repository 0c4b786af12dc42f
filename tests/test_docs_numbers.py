"""Numbers the README states are the numbers the code gives: the tiny base's scores here,
the demo's table in tests/test_demo_end_to_end.py. A change that moves them must update the
README (the tolerance allows one held-out prompt of 48 to flip)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from workbench import tiny

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
ONE_PROMPT = 1 / 48 + 1e-9


def readme_base_scores() -> dict[str, float]:
    """{task: exact match} from the README's sentence on the tiny base's scores."""
    sentence = re.search(r"`base/exact_match/<task>`\): (?P<scores>[^\n]*(?:\n[^\n]*)?), so", README)
    assert sentence, "the README no longer states the tiny base's scores"
    return {name: float(value) for name, value in re.findall(r"(\w+) ([0-9.]+)", sentence["scores"])}


def test_readme_states_the_scores_the_tiny_base_build_measures(default_tiny_base):
    measured = json.loads((default_tiny_base / tiny.BASE_INFO_FILE).read_text())["exact_match"]
    stated = readme_base_scores()
    assert set(stated) == set(measured)
    for task, value in stated.items():
        assert abs(measured[task] - value) <= ONE_PROMPT, (task, measured[task], value)
