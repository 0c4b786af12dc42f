"""The one check of a name being registered, shared by every registry (methods, adapters,
optimizers, schedules, metrics, rewards), so each refuses the same names in the same words."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def check_new_name(
    name: str, table: Mapping[str, Any], what: str, *, builtin: Collection[str] = ()
) -> None:
    """Raise ValueError unless ``name`` can be registered as a ``what`` in ``table``.

    A name is a non-empty string without ':' (the separator of an objective's
    ``kind:name`` source). A built-in entry cannot be replaced: one named in ``builtin``, or
    one whose entry says so (``entry.builtin``); a user's own entry can.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"a {what} name must be a non-empty string without ':', got {name!r}")
    existing = table.get(name)
    if name in builtin or (existing is not None and getattr(existing, "builtin", False)):
        raise ValueError(f"'{name}' is a built-in {what}; register yours under another name")
