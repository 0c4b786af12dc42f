"""How long each teaching notebook takes at its full (default) parameters, top to bottom.

    python benchmarks/notebooks.py                       # every notebook under notebooks/
    python benchmarks/notebooks.py 03_pareto_fronts 06   # the ones whose names start so
    python benchmarks/notebooks.py 08 --save run/        # and keep the executed notebook

Each notebook is executed as a reader would run it (nbclient, a fresh python3 kernel, nothing
injected), with its own temporary MLflow store and working folder, one after the other. The
tiny base comes from the workbench cache as usual, so the first notebook on a cold cache also
pays for the base's build (about 50 s on 2 cores); the table says which one did. A cell that
raises fails the notebook. The budget is 3 minutes per notebook on 2 CPU cores:
``BENCH notebook_seconds_max <s> s target=<=180``; the real-model unit (08_real_model, two
bases trained side by side, one of them SmolLM2-135M-Instruct) has 10 minutes:
``BENCH notebook_real_model_seconds <s> s target=<=600``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from machine_load import load_average

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUDGET_S = 180
# Notebooks with a budget of their own (name -> seconds), each reported on a BENCH line of its own.
OWN_BUDGETS = {"08_real_model": 600}


def budget(name: str) -> int:
    return OWN_BUDGETS.get(name, BUDGET_S)


def base_is_cached() -> bool:
    from workbench.models import tiny
    from workbench.spec.run_spec import ModelSpec

    return (tiny.cached_path(ModelSpec().tiny) / tiny.BASE_INFO_FILE).is_file()


def execute(path: Path, save: Path | None = None) -> tuple[float, list[str]]:
    """Seconds to run the notebook top to bottom, and the names of the errors its cells raised;
    the executed notebook, outputs included, is written into the folder ``save`` if given."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        started = time.perf_counter()
        try:
            NotebookClient(
                nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": folder}}
            ).execute()
        except CellExecutionError:
            pass  # the error is in the cell's outputs, read below
        seconds = time.perf_counter() - started
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save / path.name)
    errors = [
        o.get("ename", "error")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    return seconds, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument(
        "--save", type=Path, help="write each executed notebook (with its outputs) into this folder"
    )
    args = parser.parse_args(argv)
    paths = sorted(
        p
        for p in NOTEBOOKS.glob("*.ipynb")
        if not args.names or any(p.stem.startswith(n) for n in args.names)
    )
    if not paths:
        print(
            f"error: no notebook under {NOTEBOOKS.name}/ starts with {args.names}", file=sys.stderr
        )
        return 2

    import torch

    rows = []
    for path in paths:
        cold = not base_is_cached()
        seconds, errors = execute(path, args.save)
        rows.append((path.stem, seconds, cold, errors))
        print(
            f"  {path.stem}: {seconds:.1f} s"
            + (" (built the tiny base)" if cold else "")
            + (f"  ERRORS {errors}" if errors else ""),
            flush=True,
        )

    print()
    print(
        f"Notebooks at full parameters; torch {torch.__version__}, "
        f"python {platform.python_version()}, "
        f"{os.cpu_count()} cores; load average {load_average()}"
    )
    print()
    print(f"{'notebook':<32}{'seconds':>9}  note")
    for name, seconds, cold, errors in rows:
        note = ", ".join(
            filter(
                None,
                [
                    "built the tiny base" if cold else "",
                    f"errors: {errors}" if errors else "",
                    "over budget" if seconds > budget(name) else "",
                ],
            )
        )
        print(f"{name:<32}{seconds:>9.1f}  {note}")
    print()
    common = [r[1] for r in rows if r[0] not in OWN_BUDGETS]
    if common:
        print(f"BENCH notebook_seconds_max {max(common):.1f} s target=<={BUDGET_S}")
    for name, seconds, _, _ in rows:
        if name in OWN_BUDGETS:
            key = name.split("_", 1)[1]
            print(f"BENCH notebook_{key}_seconds {seconds:.1f} s target=<={OWN_BUDGETS[name]}")
    return 1 if any(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
