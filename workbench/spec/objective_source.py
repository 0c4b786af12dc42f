"""What an objective's ``"kind:name"`` source and its direction mean, in one place.

:class:`~workbench.spec.run_spec.ObjectiveSpec` reads its ``kind``, ``source_name`` and
``sign`` from these functions; code that holds an objective only as plain values (the
params of a finished run read back from MLflow, a task's declared objectives) calls them
directly, so no other module splits a source or turns a direction into a sign by hand.
"""

from __future__ import annotations

from typing import NamedTuple

SOURCE_KINDS = ("metric", "reward", "term", "cost")


class ObjectiveSource(NamedTuple):
    """A source split into its kind (``metric``, ``reward``, ``term``, ``cost``) and name."""

    kind: str
    name: str


def parse_source(source: str) -> ObjectiveSource:
    """``"reward:correct"`` -> ``ObjectiveSource("reward", "correct")``. Checks nothing: a
    malformed source gives an unknown kind or an empty name (the spec's validator rejects
    those; plain values read back from a store are taken as they are)."""
    kind, _, name = source.partition(":")
    return ObjectiveSource(kind, name)


def direction_sign(direction: str) -> int:
    """+1 when higher is better (``max``), -1 when lower is better (``min``): a value times
    its sign is larger the better it is."""
    return 1 if direction == "max" else -1
