"""Where state lives: the MLflow store and the caches (docs/concepts.md, "Where state lives").

The same rule is used by the CLI, a notebook in ``notebooks/`` and a background run, so all
of them see the same runs.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_DB_NAME = "mlflow.db"


def checkout_root(start: Path | None = None) -> Path | None:
    """The root of the workbench checkout containing ``start`` (or the cwd), if any.

    A checkout is recognised by its ``pyproject.toml`` naming the distribution next to an
    ``mlruns/`` folder, so a notebook run from ``notebooks/`` finds the same store.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and (folder / "mlruns").is_dir():
            try:
                if 'name = "finetune-workbench"' in pyproject.read_text(encoding="utf-8"):
                    return folder
            except OSError:
                continue
    return None


def default_store_dir(start: Path | None = None) -> Path:
    """``mlruns/`` at the checkout root when inside one, else ``./mlruns``."""
    root = checkout_root(start)
    return (root / "mlruns") if root is not None else (Path.cwd() / "mlruns").resolve()


def tracking_uri(spec_uri: str | None = None) -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI``, else the spec's, else the local store.

    The local store is a sqlite database inside the store folder (MLflow 3 refuses a plain
    file store), with artifacts next to it (see :func:`artifact_root`).
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if spec_uri:
        return spec_uri
    store = default_store_dir()
    return f"sqlite:///{store / STORE_DB_NAME}"


def artifact_root(uri: str) -> str | None:
    """Artifact location for experiments created in a local sqlite store: next to the db."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def cache_dir() -> Path:
    """``WORKBENCH_CACHE``, else ``$XDG_CACHE_HOME/finetune-workbench``, else ``~/.cache/...``."""
    env = os.environ.get("WORKBENCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "finetune-workbench").resolve()


def checkpoint_dir(uri: str) -> Path:
    """Where a store's runs keep their training checkpoints: next to a local sqlite store,
    else under the cache (checkpoints are large and machine-local; MLflow gets the final
    weights)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent / "checkpoints"
    return cache_dir() / "checkpoints"
