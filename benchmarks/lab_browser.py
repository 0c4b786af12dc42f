"""A notebook opened in JupyterLab in headless Chromium, for benchmarks that time what a user
sees in the browser (shared by the benchmark scripts, which run as
``python benchmarks/<name>.py`` and so import this by its bare name).

The same set-up as the browser tests: `workbench lab` on a free 127.0.0.1 port with Jupyter's
and IPython's folders (and HOME) under a temporary folder, Debian's Chromium driven by
Playwright for Python (never Playwright's own browser downloads), the notebook run with
"Run All" once the status bar says the kernel is idle. Every wait is on a condition with a
deadline; the server is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # WebGL (plotly's scatter matrix) in software, as on a machine without a GPU.
    "--enable-unsafe-swiftshader",
]
# JupyterLab prints its URL in ~5 s on 2 idle cores, 20-40 s on 2 busy ones.
LAB_START_S = 180.0
IDLE_KERNEL = "Python 3 (ipykernel) | Idle"


class BrowserMissing(RuntimeError):
    """Chromium or Playwright is not installed; the message says how to install it."""


def wait_for(condition, seconds: float, what: str, poll_s: float = 0.1):
    """Poll ``condition()`` until it returns something truthy (returned); raise naming
    ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:g} s")
        time.sleep(poll_s)


def isolated_env(folder: Path, extra: dict[str, str]) -> dict[str, str]:
    """Jupyter, IPython and Chromium write into HOME: all of it under ``folder``. Every cell
    stays attached to the page (no windowing), so locators see cells out of view."""
    env = {**os.environ, **extra}
    for var, sub in (
        ("HOME", "home"),
        ("JUPYTER_CONFIG_DIR", "jcfg"),
        ("JUPYTER_DATA_DIR", "jdata"),
        ("JUPYTER_RUNTIME_DIR", "jrun"),
        ("IPYTHONDIR", "ipy"),
    ):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(folder / sub)
    settings = folder / "jcfg" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    return env


@contextlib.contextmanager
def lab_server(notebooks: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, str]]:
    """`workbench lab --dir notebooks` in the background; yields (base URL, token)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "lab", "--dir", str(notebooks), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        found = wait_for(
            lambda: (
                re.search(
                    r"JupyterLab on (http://127\.0\.0\.1:\d+)/lab\?token=(\w+)", log.read_text()
                )
                or process.poll() is not None
            ),
            LAB_START_S,
            "`workbench lab` printed its URL",
            poll_s=0.5,
        )
        if not isinstance(found, re.Match):
            raise RuntimeError(f"`workbench lab` exited: {log.read_text()[-2000:]}")
        yield found.group(1), found.group(2)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check_browser() -> None:
    """Raise :class:`BrowserMissing` (naming the fix) when Playwright or Chromium is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BrowserMissing(
            "Playwright for Python is missing: pip install -e '.[dev]' (never `playwright "
            "install`: the benchmark drives the system's Chromium), or pass --no-browser"
        ) from None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise BrowserMissing(
            f"no Chromium at {CHROMIUM}: apt-get install -y --no-install-recommends chromium, "
            "or point WORKBENCH_CHROMIUM at a Chromium binary, or pass --no-browser"
        )


@contextlib.contextmanager
def chromium(home: Path):
    """One headless Chromium; :class:`BrowserMissing` names the fix when it cannot start."""
    check_browser()
    from playwright.sync_api import sync_playwright

    home.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(home)}
        )
        try:
            yield browser
        finally:
            browser.close()


def run_all(page, base: str, token: str, notebook: str, done_text: str, seconds: float) -> None:
    """Open ``notebook``, run every cell once the kernel is idle, and wait until an output
    shows ``done_text``; a traceback in an output raises with its text."""
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    # The status bar, not the toolbar's indicator: that one races the kernel's connection.
    page.get_by_text(IDLE_KERNEL).wait_for(timeout=seconds * 1000)
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    done = page.locator(".jp-OutputArea-output", has_text=done_text)
    failed = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
    wait_for(lambda: done.count() or failed.count(), seconds, f"an output showed {done_text!r}")
    if failed.count():
        raise RuntimeError(f"the notebook failed: {failed.first.inner_text()[-2000:]}")
    page.get_by_text(IDLE_KERNEL).wait_for(timeout=seconds * 1000)
