"""`workbench lab`: JupyterLab on the notebooks, on 127.0.0.1, behind a token, stopped cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import wait_until
from workbench.serving.servers import LAB_DISABLED_PLUGINS


@pytest.fixture
def jupyter_env(tmp_path):
    env = dict(os.environ)
    env["WORKBENCH_CACHE"] = str(tmp_path / "cache")
    for var, sub in (
        ("HOME", "home"),
        ("JUPYTER_CONFIG_DIR", "jcfg"),
        ("JUPYTER_DATA_DIR", "jdata"),
        ("JUPYTER_RUNTIME_DIR", "jrun"),
        ("IPYTHONDIR", "ipy"),
    ):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    return env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_lab_serves_the_notebooks_with_a_token(jupyter_env, tmp_path):
    log = tmp_path / "lab.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "lab", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=jupyter_env,
        )
    try:
        # JupyterLab answers in ~5 s on 2 idle cores; wide margin for a loaded machine.
        line = wait_until(
            lambda: re.search(
                r"JupyterLab on (http://127\.0\.0\.1:\d+)/lab\?token=(\w+)", log.read_text()
            ),
            120,
            "JupyterLab's URL printed",
        )
        base, token = line.group(1), line.group(2)
        status, body = _get(f"{base}/api/contents?token={token}")
        assert status == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert {"00_quickstart.ipynb", "01_first_weight_sweep.ipynb"} <= names
        # The news pop-up's plugin is off in the page JupyterLab serves (it covers the cells
        # otherwise, news_url=None or not), and the user's own Jupyter config is left alone.
        status, page = _get(f"{base}/lab?token={token}")
        assert status == 200
        config = json.loads(
            re.search(
                rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                page,
                re.S,
            ).group(1)
        )
        assert LAB_DISABLED_PLUGINS[0] in config["disabledExtensions"]
        assert not (tmp_path / "jcfg" / "labconfig").exists()
        assert _get(f"{base}/api/contents")[0] == 403  # no token, no notebooks
        assert _get(f"{base}/api/contents?token=wrong")[0] == 403
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert "JupyterLab stopped" in log.read_text()
    with pytest.raises(OSError):  # its whole process group is gone: nothing answers
        urllib.request.urlopen(f"{base}/api", timeout=5)
