"""Packages a reward needs beyond the workbench's own code, and what to say when one is absent.

A reward that needs a package imports it on first use (so importing the reward tables stays
cheap), and exposes ``missing()``: where a run starts, :func:`workbench.running.preflight.check`
asks it, so a spec naming the reward on a machine without the package fails there with one line
naming the extra to install, before anything loads; the first call raises the same line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from workbench.spec.errors import MissingPackage

DISTRIBUTION = "finetune-workbench"


@dataclass(frozen=True)
class RewardPackage:
    """A package ``module`` (installed as ``distribution``) that ``reward`` needs.

    ``extra`` is the optional extra of the workbench that installs it; None for a core
    dependency (missing only from an installation made without dependencies).
    """

    reward: str
    module: str
    distribution: str
    extra: str | None = None

    def message(self) -> str:
        install = (
            f"pip install '{DISTRIBUTION}[{self.extra}]'"
            if self.extra
            else f"pip install {self.distribution} (a dependency of {DISTRIBUTION})"
        )
        return (
            f"reward:{self.reward} needs the package {self.distribution}, which is not "
            f"installed; install it with: {install}"
        )

    def missing(self) -> str | None:
        """Why the reward cannot run here (the package is absent), or None."""
        try:
            self.load()
        except MissingPackage as err:
            return str(err)
        return None

    def load(self) -> ModuleType:
        """The imported package; :class:`MissingPackage` (one line) when it is absent."""
        try:
            return importlib.import_module(self.module)
        except ImportError:
            raise MissingPackage(self.message()) from None
