"""Benchmark children one at a time, or a few side by side for a smoke run.

A benchmark times each child on cores nothing else uses, so its children run one after the
other. A smoke run (``--quick``) checks only that every child runs and that the script
prints its table and BENCH lines; its children spend most of their time importing torch and
the libraries, on one core each, so ``--jobs 2`` runs two at once and the run takes about
half as long. Timings from children run side by side are not comparable; the scripts print
the jobs beside their tables.

Shared by the benchmark scripts, which run as ``python benchmarks/<name>.py`` and so import
this by its bare name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="children run side by side (default 1; more only for smoke runs: their "
        "timings are then not comparable)",
    )


def side_by_side_note(jobs: int) -> str:
    """What a script prints beside its table when its children ran side by side ("" if not)."""
    return f"{jobs} children side by side (timings not comparable)" if jobs > 1 else ""


def run_children(
    run: Callable[[Item], Result], items: Iterable[Item], jobs: int = 1
) -> list[Result]:
    """``run`` over ``items``, in order, at most ``jobs`` at a time; the results in the items'
    order. The first error raised is raised again once the children started have ended."""
    items = list(items)
    if jobs <= 1:
        return [run(item) for item in items]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, items))


def run_repeat(
    run: Callable[[str], Result],
    names: list[str],
    repeat: int,
    results: dict[str, list[Result]],
    jobs: int = 1,
) -> None:
    """One repeat of a benchmark: ``run(name)`` for each of ``names``, in an order that
    rotates with ``repeat`` (so no name always runs first), each result appended to
    ``results[name]``."""
    shift = repeat % len(names)
    ordered = names[shift:] + names[:shift]
    for name, result in zip(ordered, run_children(run, ordered, jobs)):
        results[name].append(result)
