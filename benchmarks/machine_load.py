"""The machine's load average, printed beside benchmark tables (shared by the benchmark scripts,
which run as ``python benchmarks/<name>.py`` and so import this by its bare name)."""

from __future__ import annotations

import os


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"
