"""Errors the workbench raises on purpose: each names the problem and the fix.

Everything a user can get wrong (a spec field, a dataset row, a store URI) ends in one of
these, so the CLI can print the message alone, without a traceback from deep inside a
library.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class SpecError(WorkbenchError, ValueError):
    """A RunSpec field has a bad value (raised before anything runs or is written)."""


class DataError(WorkbenchError, ValueError):
    """A dataset is missing, unreadable or has a malformed row."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ):
        where = []
        if source is not None:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.source, self.row, self.field = source, row, field


class ModelError(WorkbenchError):
    """A base model cannot be found or loaded under the spec's safety settings."""


class TrackingError(WorkbenchError):
    """The MLflow store cannot be reached or a run cannot be found."""


class RunFailed(WorkbenchError):
    """A training run ended FAILED; the message carries the cause and the run id."""


class MissingPackage(WorkbenchError):
    """A package a chosen feature needs is not installed; the message names what installs it."""
