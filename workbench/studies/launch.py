"""Background studies: a weight sweep or a search in a process of its own, as a handle.

:func:`launch_sweep` and :func:`launch_search` check what they are given here (a bad spec,
design or search section fails before any process starts), write the config to a file of
its own and start ``workbench sweep`` / ``workbench search`` detached (its own process
session: it survives the notebook kernel, and stopping it signals its whole group). They
return a :class:`StudyHandle`, as :func:`workbench.launch` returns a
:class:`~workbench.running.launcher.RunHandle` for one run; the study's runs are found in the
store (its experiment, started since :attr:`StudyHandle.started_ms`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from workbench import tracking
from workbench.running import allocator
from workbench.spec.plugins import child_env, plugin_modules
from workbench.spec.run_spec import RunSpec
from workbench.studies.sweep import design_points, sweep_specs, swept_weights


@dataclass
class StudyHandle:
    """A launched study: ``alive()``, ``wait()``, ``stop()``, ``returncode``, ``log_tail()``."""

    experiment: str  # where its runs appear
    popen: subprocess.Popen
    log_path: Path
    what: str  # "sweep of 5 points", said when it ends
    started_ms: int  # when it was launched (MLflow's clock: ms since the epoch)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The process's exit status (0: the study finished); None while it runs."""
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the study's process to exit; its exit status."""
        return self.popen.wait(timeout)

    def stop(self, grace_s: float = 20.0) -> int:
        """SIGTERM to the study's process group (it stops its runs, which end KILLED), then
        SIGKILL after ``grace_s`` seconds; its exit status."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                return self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait()

    def log_tail(self, lines: int = 3) -> list[str]:
        """The last ``lines`` lines of the study's log."""
        return self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]


def launch_sweep(
    spec: RunSpec | dict,
    points: int = 5,
    *,
    design: str = "grid",
    parallel: int = 2,
    uri: str | None = None,
) -> StudyHandle:
    """A weight sweep of ``spec`` over ``points`` training weights (``design``: grid or
    random), ``parallel`` runs at a time, in a process of its own (``workbench sweep``; its
    parent run records the front). A bad spec or design fails here."""
    spec = spec if isinstance(spec, RunSpec) else RunSpec.parse(spec)
    sweep_specs(spec, design_points(design, len(swept_weights(spec)), points))  # checks
    return _launch_study(
        spec,
        spec.to_yaml(),
        [
            "sweep",
            "--points",
            str(points),
            "--design",
            design,
            "--parallel",
            str(max(parallel, 2)),
        ],
        f"sweep of {points} points",
        uri,
    )


def launch_search(
    config: dict | str | Path, trials: int = 8, *, workers: int = 1, uri: str | None = None
) -> StudyHandle:
    """A multi-objective search (``workbench search``: a run spec with a ``search`` section, as
    a dict or a YAML file) of ``trials`` trials on ``workers`` worker processes, in a process
    of its own. A bad config fails here."""
    from workbench.studies.search import check_counts, load_config

    check_counts(trials, workers)
    text = (
        Path(config).read_text(encoding="utf-8")
        if isinstance(config, (str, Path))
        else yaml.safe_dump(config)
    )
    with tempfile.TemporaryDirectory() as folder:  # validated the way the command will read it
        checked = Path(folder) / "study.yaml"
        checked.write_text(text, encoding="utf-8")
        spec, _ = load_config(checked)
    return _launch_study(
        spec,
        text,
        ["search", "--trials", str(trials), "--workers", str(workers)],
        f"search of {trials} trials",
        uri,
    )


def _launch_study(
    spec: RunSpec, config_text: str, command: list[str], what: str, uri: str | None
) -> StudyHandle:
    """Start ``workbench <command[0]> CONFIG <command[1:]>`` detached, with the config written
    to a file of its own, writing to the store at ``uri`` (default: the usual one)."""
    folder = Path(tempfile.mkdtemp(prefix=f"workbench-{command[0]}-"))
    config_path, log_path = folder / "config.yaml", folder / f"{command[0]}.log"
    config_path.write_text(config_text, encoding="utf-8")
    env = allocator.preload_environment(child_env(plugin_modules(spec), dict(os.environ)))
    # The study writes where its caller reads.
    env["MLFLOW_TRACKING_URI"] = tracking.connect(uri).tracking_uri
    argv = [
        sys.executable,
        "-m",
        "workbench.cli",
        command[0],
        str(config_path),
        *command[1:],
        "--no-progress",
    ]
    started_ms = int(time.time() * 1000)
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return StudyHandle(spec.tracking.experiment, popen, log_path, what, started_ms)
