"""Processes that open the same new sqlite store at the same moment all get it: MLflow's
schema creation runs in one of them at a time (runs launched together on a fresh mlruns/)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT, sqlite_uri, wait_until
from workbench.tracking.store import connect

OPENERS = 4

OPEN_WHEN_TOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from workbench.tracking.store import connect

    uri, ready = sys.argv[1], Path(sys.argv[2])
    ready.touch()
    sys.stdin.readline()  # the go: a line the test writes to every opener at once
    client = connect(uri)
    client.create_experiment(f"opener-{ready.name}")
    print("opened")
    """
)


def test_processes_opening_one_new_store_at_once_all_get_it(tmp_path, monkeypatch):
    # The URI given here, not the session's.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = sqlite_uri(tmp_path / "store")
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_WHEN_TOLD, uri, str(tmp_path / f"ready-{i}")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(OPENERS)
    ]
    try:
        # Every process imported and waits: then all open the store together.
        # About 5 s of imports each on 2 idle cores; 120 s for a loaded machine.
        wait_until(
            lambda: all((tmp_path / f"ready-{i}").exists() for i in range(OPENERS)),
            120,
            "every opener to import and wait",
        )
        for p in openers:
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in openers]
    finally:
        for p in openers:
            p.kill()
    for p, (out, err) in zip(openers, outputs):
        assert p.returncode == 0 and out.strip() == "opened", err[-2000:]
    names = {e.name for e in connect(uri).search_experiments()}
    assert {f"opener-ready-{i}" for i in range(OPENERS)} <= names
