"""User plugins (methods, metrics, rewards registered from a module or a notebook) in a
fresh process.

A background run starts a new interpreter, whose registries hold only the built-ins. The
launcher asks :func:`plugin_modules` which modules registered what the spec uses, and the
new process imports them (:func:`import_plugins`) before it reads the spec. Something
defined in a notebook cell or a script run as ``__main__`` cannot be imported by name, so
it is refused at launch with how to fix it, rather than failing in the background.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.objectives import scoring as objectives
from workbench.spec import registry
from workbench.spec.errors import SpecError

if TYPE_CHECKING:
    from workbench.spec.run_spec import RunSpec

ENV_VAR = "WORKBENCH_PLUGINS"
# The run's tag naming the plugin modules, so `workbench resume` can import them again.
TAG = "workbench.plugins"


def plugin_modules(spec: RunSpec) -> list[str]:
    """Modules a fresh process must import to find the spec's non-built-in choices; a
    SpecError for one that cannot be imported by name (defined in a notebook cell)."""
    wanted = _wanted(spec)
    for module, what in wanted.items():
        if module == "__main__" or module.startswith("__"):
            raise SpecError(
                f"{what} is defined in a notebook cell or a script run directly, which a "
                "background run cannot import; move it into a .py file next to the notebook "
                "(e.g. my_plugins.py), `import my_plugins` there, and launch again"
            )
        if module not in sys.modules and importlib.util.find_spec(module) is None:
            raise SpecError(f"{what} comes from module '{module}', which cannot be imported")
    return sorted(wanted)


def plugin_tags(spec: RunSpec) -> dict[str, str]:
    """The run tag naming the spec's importable plugin modules (none: no tag)."""
    modules = sorted(m for m in _wanted(spec) if m != "__main__" and not m.startswith("__"))
    return {TAG: ",".join(modules)} if modules else {}


def _wanted(spec: RunSpec) -> dict[str, str]:
    """{module: what needs it} for the spec's method, metrics and rewards not built in."""
    wanted: dict[str, str] = {}
    assert spec.method is not None  # a validated spec has its method
    method = registry.METHODS[spec.method.name]
    if not method.builtin:
        for ref in (method.module, method.params, method.loss):
            module = registry.ref_module(ref) if ref is not None else ""
            # The workbench's own (a row kind's generic module, the base parameters) loads anyway.
            if module != "workbench" and not module.startswith("workbench."):
                wanted.setdefault(module, f"method '{method.name}'")
    for o in spec.objectives:
        source_module = objectives.module_of(o.source)
        if source_module is not None:
            wanted.setdefault(source_module, f"objective '{o.name}' ({o.source})")
    wanted.pop("", None)
    return wanted


def child_env(modules: list[str], env: dict[str, str]) -> dict[str, str]:
    """``env`` for a process that imports ``modules``: their names, and the folders they
    were imported from on its ``PYTHONPATH``."""
    env = dict(env)
    if not modules:
        env.pop(ENV_VAR, None)
        return env
    env[ENV_VAR] = ",".join(modules)
    roots = [str(r) for r in (_import_root(m) for m in modules) if r is not None]
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *existing]))
    return env


def _import_root(module: str) -> Path | None:
    """The sys.path entry ``module`` was found under (its file minus its dotted name)."""
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    levels = module.count(".") + (2 if path.name == "__init__.py" else 1)
    return path.parents[levels - 1]


def import_plugins(names: str | None = None) -> None:
    """Import the modules named in ``$WORKBENCH_PLUGINS`` (comma-separated), which register
    their methods, metrics and rewards as they load."""
    names = os.environ.get(ENV_VAR, "") if names is None else names
    for name in filter(None, (n.strip() for n in names.split(","))):
        importlib.import_module(name)
