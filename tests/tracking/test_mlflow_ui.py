"""MLflow's own UI in a real browser: a workbench experiment opens on its runs table, where a
sweep's runs read by name (tracking.naming.experiment_url: MLflow 3.17 otherwise opens a GenAI
overview in a browser that never chose its "Model training" view).

A plain ``mlflow server`` on a free 127.0.0.1 port (one worker, no job runner: ready in
about 6 s on 2 idle cores) over a sqlite store the workbench wrote, stopped by its PID's
process group; headless Debian Chromium (``/usr/bin/chromium``, or ``WORKBENCH_CHROMIUM``)
driven by Playwright for Python, never a Playwright browser download. Every wait is on a
condition with a deadline; the screenshot lands in the test's tmp folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import fast_spec, wait_until

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(store_uri, tmp_path):
    """An MLflow server over the test's store: its URL; stopped (its whole process group) after."""
    port = _free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", HOME=str(tmp_path))
    log = tmp_path / "mlflow-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", store_uri, "--workers", "1",
             "--default-artifact-root", str(tmp_path / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # About 6 s on 2 idle cores, 12-22 s beside other work: 180 s for a loaded machine.
        wait_until(lambda: _answers(url) or server.poll() is not None, 180, "mlflow server answers")
        assert server.poll() is None, log.read_text()[-3000:]
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture
def page(tmp_path):
    """A page of a fresh headless Chromium: no choice of MLflow view remembered."""
    from playwright.sync_api import sync_playwright

    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        if shutil.which("apt-get") or os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium, or set "
                        "WORKBENCH_CHROMIUM")  # fmt: skip
        pytest.skip(f"no Chromium at {CHROMIUM} and no apt-get to install it")
    home = tmp_path / "chromium-home"
    home.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             env=dict(os.environ, HOME=str(home)))  # fmt: skip
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 800})
        finally:
            browser.close()


def test_a_workbench_experiment_opens_on_its_runs_table(store_uri, mlflow_server, page, tmp_path):
    from workbench import tracking
    from workbench.spec.run_spec import RunSpec
    from workbench.tracking.naming import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_url

    # A sweep as the workbench records one: a parent and a child per weight, named by it.
    client = tracking.connect(store_uri)
    spec = RunSpec.parse(fast_spec(tracking={"experiment": "at-a-glance"}))
    parent = tracking.start_run(client, spec.updated(**{"tracking.run_name": "mo-sft order sweep"}))
    for weight in (0.2, 0.8):
        child = tracking.start_run(
            client, spec.updated(**{"tracking.run_name": f"correctness={weight:g}"}),
            parent_run_id=parent,
        )  # fmt: skip
        client.log_metric(child, "objective/correctness", weight, step=4)
        tracking.end_run(client, child, "FINISHED")
    tracking.end_run(client, parent, "FINISHED")
    experiment = client.get_experiment_by_name("at-a-glance")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    page.goto(experiment_url(mlflow_server, experiment.experiment_id))
    try:
        # The bundle loads and renders in about 10 s on 2 loaded cores; the page polls forever,
        # so wait for the parent's row, never for network idle.
        parent_link = page.locator(f"a[href*='{parent}']", has_text="mo-sft order sweep").first
        parent_link.wait_for(timeout=120_000)
        assert "/runs" in page.url
        # Not MLflow's GenAI overview, with its "Detect Issues" pop-up.
        assert page.get_by_text("Detect Issues").count() == 0
        assert page.get_by_text("Model training").first.is_visible()
        # MLflow nests the children under their parent's expander; opened, each reads by weight.
        row = parent_link.locator("xpath=ancestor::*[@role='row'][1]")
        row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for name in ("correctness=0.2", "correctness=0.8"):
            page.locator("a", has_text=name).first.wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(tmp_path / "runs-table.png"))
        print(f"screenshot: {tmp_path / 'runs-table.png'}")
    assert Path(tmp_path / "runs-table.png").stat().st_size > 0
