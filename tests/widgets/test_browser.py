"""In a real browser: the quickstart notebook in JupyterLab, and the MLflow UI's runs table.

Headless Debian Chromium (``/usr/bin/chromium``; ``WORKBENCH_CHROMIUM`` names another binary)
driven by Playwright for Python. Playwright's own browser downloads are never used: set-up
installs Chromium with apt-get (scripts/setup.sh dev, as root). Servers start on a free
127.0.0.1 port and are stopped by their PID; every wait is on a condition with a deadline
sized from a measurement on 2 cores (each says which), never a fixed sleep. Screenshots of
each stage land in the test's tmp folder, under ``screenshots/``; a failing test prints
that folder and adds ``failure.png`` there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from benchmarks.lab_browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import FAST_TINY, ROOT, fast_spec, wait_until

# A widget change's round trip through the kernel: well under a second on idle cores; the
# monitor's polling thread shares that kernel, so allow for a loaded machine.
ROUND_TRIP_MS = 60_000
INSTALL_HINT = (
    "install it with `apt-get update && apt-get install -y --no-install-recommends "
    "chromium` (scripts/setup.sh dev does this when run as root), or point "
    "WORKBENCH_CHROMIUM at a Chromium binary"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module; a missing piece fails naming the fix."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: pip install -c constraints.txt -e '.[dev]' "
            "(never `playwright install`: these tests drive the system's Chromium)"
        )
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        if shutil.which("apt-get") or os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}")
        # Only where Debian's package cannot be had at all (no apt-get, outside CI).
        pytest.skip(
            f"no Chromium at {CHROMIUM} and no apt-get to install it: set "
            f"WORKBENCH_CHROMIUM to a Chromium or Chrome binary"
        )
    home = tmp_path_factory.mktemp("chromium-home")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=dict(os.environ, HOME=str(home))
        )
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Numbered screenshots of a page in ``folder``, each printed with the seconds since the
    start (where the time went, in a failure's captured output); ``on_failure()`` adds one."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.count = page, folder, 0
        self.start = time.monotonic()
        folder.mkdir(exist_ok=True)

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        print(f"{time.monotonic() - self.start:6.1f} s  {path.name}")
        return path

    @contextlib.contextmanager
    def on_failure(self, request):
        request.node.user_properties.append(("screenshots", str(self.folder)))
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.page.screenshot(path=str(self.folder / "failure.png"))
            print(f"screenshots of this test: {self.folder}")
            raise


def _jupyter_env(tmp_path: Path) -> dict[str, str]:
    """Jupyter, IPython and Chromium write into HOME: all of it under the test's folder. Lab
    settings: every cell stays attached to the page (no windowing), so locators see cells out
    of view. The news pop-up is left to `workbench lab` to turn off (the test checks it)."""
    env = dict(os.environ)
    for var, sub in (
        ("HOME", "home"),
        ("JUPYTER_CONFIG_DIR", "jcfg"),
        ("JUPYTER_DATA_DIR", "jdata"),
        ("JUPYTER_RUNTIME_DIR", "jrun"),
        ("IPYTHONDIR", "ipy"),
        ("TMPDIR", "tmp"),
    ):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    settings = tmp_path / "jcfg" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    return env


def _start(
    command: list[str], env: dict, log: Path, ready: str, seconds: float
) -> tuple[subprocess.Popen, re.Match]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        match = wait_until(
            lambda: re.search(ready, log.read_text()) or process.poll() is not None,
            seconds,
            f"`workbench {' '.join(command)}` printed its URL",
        )
        assert isinstance(match, re.Match), f"it exited: {log.read_text()}"
    except BaseException:
        _stop(process)
        raise
    return process, match


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the workbench command by its PID; it ends its server's process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_leftover_runs(experiment: str) -> None:
    """A failed test must not leave a training process behind."""
    from workbench import tracking
    from workbench.running import launcher
    from workbench.widgets.monitor import running_runs

    for run_id in running_runs(tracking.connect(), experiment):
        launcher.attach(run_id).stop()


# ------------------------------------------------------------------------- JupyterLab


def _row_state(row) -> tuple[str, float, str]:
    """A monitor row: (label text, bar width in percent, bar classes)."""
    bar = row.locator(".progress-bar")
    width = bar.evaluate("el => parseFloat(el.style.width) || 0")
    return (
        row.locator(".widget-html-content").nth(1).inner_text(),
        width,
        bar.get_attribute("class"),
    )


def _ended(row) -> str | None:
    """The row's bar classes once its run ended (a bar style: success, danger or warning)."""
    classes = _row_state(row)[2]
    return classes if re.search(r"progress-bar-(success|danger|warning)", classes) else None


def _step(label: str) -> int:
    match = re.search(r"step (\d+)/", label)
    return int(match.group(1)) if match else 0


# Widget text that must show whole: descriptions, checkbox and button labels, slider readouts.
_LABELS = (
    "label, .widget-label, .widget-label-basic, .widget-label-basic span, .widget-readout, "
    "button, .widget-toggle-button"
)
_CUT_LABELS = """(output, selector) => [...output.querySelectorAll(selector)]
    .filter(el => el.offsetParent !== null && el.textContent.trim())
    .filter(el => {
        const box = el.getBoundingClientRect(), out = output.getBoundingClientRect();
        // The text's own width, measured on an unconstrained copy beside it (an ellipsis
        // hides the cut from scrollWidth in some layouts).
        const copy = el.cloneNode(true);
        copy.style.cssText = "position:absolute;visibility:hidden;width:auto;max-width:none;" +
            "min-width:0;white-space:nowrap;overflow:visible;flex:none;display:inline-block";
        el.parentElement.appendChild(copy);
        const natural = copy.getBoundingClientRect().width;
        copy.remove();
        // Strict: an ellipsis replaces the last letters when the text is a pixel too wide.
        return el.scrollWidth > el.clientWidth || natural > box.width + 0.5 ||
            box.right > out.right + 1;
    })
    .map(el => el.textContent.trim())"""
_WIDE_CHARTS = """output => [...output.querySelectorAll('.js-plotly-plot')]
    .map(plot => [plot.querySelector('.main-svg').getBoundingClientRect(),
                  plot.querySelector('.gtitle')])
    .filter(([box]) => box.right > output.getBoundingClientRect().right + 1 || box.width < 100)
    .map(([box, title]) => `${title ? title.textContent : 'a chart'}: ${Math.round(box.left)}-` +
         `${Math.round(box.right)} px`)"""


def _layout_problems(cell) -> list[str]:
    """What does not fit in a cell's output at this width: charts wider than the output (or
    not drawn), widget labels cut (their text wider than their box, or past the output's
    right edge), and a horizontal scroll bar on the output."""
    problems = []
    for output in cell.locator(".jp-OutputArea-output").all():
        problems += [f"chart overflows its cell: {c}" for c in output.evaluate(_WIDE_CHARTS)]
        problems += [f"label cut: {text!r}" for text in output.evaluate(_CUT_LABELS, _LABELS)]
        if output.evaluate("el => el.scrollWidth > el.clientWidth + 1"):
            problems.append("the output scrolls sideways")
    return problems


def _legend_entries(chart) -> list[str]:
    """The entries a plotly chart's legend shows."""
    return [t.text_content() for t in chart.locator(".legend .traces .legendtext").all()]


@pytest.mark.slow
def test_quickstart_in_jupyterlab(browser, store_uri, tmp_path, request):
    from playwright.sync_api import expect

    from workbench import tracking

    env = _jupyter_env(tmp_path)
    # The kernel and the runs it launches side by side get one thread each: oversubscribed
    # threads spin and slow every process on 2 cores.
    env["OMP_NUM_THREADS"] = "1"
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "00_quickstart.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += (
        "\n# injected by the test\n"
        f"steps = 8\ncorrectness_weights = [0.9, 0.2]\ntiny = {dict(FAST_TINY)!r}\n"
        "timeout_s = 240"
    )
    nbformat.write(nb, notebooks / "00_quickstart.ipynb")

    # JupyterLab prints its URL in ~5 s on 2 idle cores, 20-40 s on 2 busy ones.
    lab, url = _start(
        ["lab", "--dir", str(notebooks), "--port", "0"],
        env,
        tmp_path / "lab.out",
        r"JupyterLab on (http://127\.0\.0\.1:\d+)/lab\?token=(\w+)",
        180,
    )
    base, token = url.group(1), url.group(2)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    shots = Screenshots(page, tmp_path / "screenshots")
    try:
        with shots.on_failure(request):
            page.goto(f"{base}/lab/tree/00_quickstart.ipynb?token={token}")
            # The status bar, not the toolbar's indicator: that one races the kernel's connection.
            # ~9 s from the page load on 2 loaded cores.
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=180_000)
            shots.take("opened")

            page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            # The last cell's output; with the two 8-step runs the notebook took 66-85 s on 2 busy
            # cores (the tiny base built on the way: the session had not built it yet).
            last = page.locator(".jp-OutputArea-output", has_text="the shorter answers came from")
            failed = page.locator(
                ".jp-OutputArea-output", has_text="Traceback (most recent call last)"
            )
            wait_until(
                lambda: last.count() or failed.count(),
                360,
                "the notebook ran to its last cell",
                poll_s=1,
            )
            assert not failed.count(), failed.first.inner_text()
            shots.take("notebook-ran")
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(
                timeout=ROUND_TRIP_MS
            )
            statuses = page.locator(
                ".jp-OutputArea-output", has_text="statuses: ['FINISHED', 'FINISHED']"
            )
            expect(statuses).to_have_count(1)

            builder = page.locator(".jp-CodeCell", has_text="builder = ExperimentBuilder(")
            monitor = page.locator(".jp-CodeCell", has_text="monitor = RunMonitor(builder")
            explorer = page.locator(
                ".jp-CodeCell", has_text="explorer = ParetoExplorer(experiment)"
            )
            rows = monitor.locator(".widget-hbox:has(> .widget-hprogress)")
            expect(rows).to_have_count(2)
            summary = explorer.locator(
                ".widget-html-content", has_text=" on the front, hypervolume "
            )
            expect(summary).to_have_text(re.compile(r"^2 runs, "))

            # At 1280 px: no news pop-up over the cells (`workbench lab` turns it off; it shows
            # within seconds of the page load otherwise), every chart within its cell, no label
            # cut, and one legend entry per run in each of the monitor's charts.
            assert not page.get_by_text("official Jupyter news").count()
            charts = monitor.locator(".js-plotly-plot")
            expect(charts).to_have_count(2)
            # Each metric in a panel of its own, titled; the learning rate apart from the loss.
            for title in ("training loss", "learning rate"):
                expect(charts.first.locator(".annotation-text", has_text=title)).to_have_count(1)
            for chart in charts.all():
                assert sorted(_legend_entries(chart)) == sorted(
                    r.locator("code").inner_text() for r in rows.all()
                )
            for cell, name in ((builder, "builder"), (monitor, "monitor"), (explorer, "explorer")):
                cell.scroll_into_view_if_needed()
                shots.take(name)
                assert not _layout_problems(cell), (name, _layout_problems(cell))
            # A click on a point shows what the run is, then its metrics (readable names).
            point = explorer.locator(".scatterlayer .point").first.bounding_box()
            page.mouse.click(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
            details = explorer.locator(".widget-html-content", has_text="training weight")
            expect(details).to_contain_text("trainable parameters", timeout=ROUND_TRIP_MS)
            details.scroll_into_view_if_needed()
            shots.take("run-details")
            assert not _layout_problems(explorer), _layout_problems(explorer)

            # Drag the correctness weight to the middle of its slider; brevity's follows (simplex).
            correctness = builder.locator(
                ".widget-slider", has=page.locator("label", has_text="correctness")
            )
            length = builder.locator(".widget-slider", has=page.locator("label", has_text="length"))
            correctness.scroll_into_view_if_needed()
            handle = correctness.locator(".noUi-handle").bounding_box()
            track = correctness.locator(".noUi-base").bounding_box()
            page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
            page.mouse.down()
            page.mouse.move(
                track["x"] + track["width"] * 0.5, handle["y"] + handle["height"] / 2, steps=8
            )
            page.mouse.up()

            def weights():
                c = float(correctness.locator(".widget-readout").inner_text())
                n = float(length.locator(".widget-readout").inner_text())
                return (c, n) if abs(c - 0.5) < 0.06 and abs(c + n - 1) < 0.011 else None

            # The kernel rescales the other slider: a round trip, ~0.1 s.
            correctness_weight, length_weight = wait_until(
                weights, 30, "the weights moved to ~0.5/0.5"
            )
            shots.take("slider-moved")

            message = monitor.locator(".widget-html-content", has_text="launched run")

            def launch() -> str:
                before = message.inner_text()
                monitor.get_by_role("button", name="Launch").click()
                # launch() returns once the run exists: ~2 s on 2 loaded cores.
                wait_until(lambda: message.inner_text() != before, 60, "a new launched run shown")
                return re.search(r"launched run (\w+)", message.inner_text()).group(1)

            short_id = launch()
            # A second run long enough to be stopped while it trains.
            steps = builder.locator(
                ".widget-text", has=page.locator("label", has_text=re.compile("^steps$"))
            )
            steps.locator("input").fill("100000")
            steps.locator("input").press("Enter")
            builder.get_by_role("button", name="Show the code").click()
            expect(builder.locator("pre", has_text="steps: 100000")).to_have_count(
                1, timeout=ROUND_TRIP_MS
            )
            long_id = launch()
            expect(rows).to_have_count(4, timeout=ROUND_TRIP_MS)
            short_row, long_row = rows.nth(2), rows.nth(3)

            # Its progress bar advances: the step and the bar's width both grow. Two runs launched
            # at once showed their first steps after 28-42 s on 2 busy cores.
            def moved_past(step: int, width: float):
                label, now, _ = _row_state(long_row)
                if _ended(long_row):
                    pytest.fail(f"the long run ended before it was stopped: {label}")
                return (_step(label), now) if _step(label) > step and now > width else None

            step, width = wait_until(
                lambda: moved_past(0, 0.0), 240, "the long run's progress bar moved"
            )
            wait_until(lambda: moved_past(step, width), 120, "the long run's progress bar advanced")
            # Four runs now: each chart lists each run once, with its MLflow run name. The monitor
            # draws a run's loss with its first logged steps (one polling interval, 1 s).
            names = sorted(r.locator("code").inner_text() for r in rows.all())
            loss_chart = charts.first
            wait_until(
                lambda: sorted(_legend_entries(loss_chart)) == names,
                60,
                f"the loss chart's legend lists {names}",
            )
            monitor.scroll_into_view_if_needed()
            shots.take("training")
            assert not _layout_problems(monitor), _layout_problems(monitor)

            # The short run finishes (8 steps: seconds once it trains), then the front takes it in.
            assert "progress-bar-success" in wait_until(
                lambda: _ended(short_row), 240, "the launched short run ended"
            ), _row_state(short_row)
            assert _row_state(short_row)[0].startswith("finished, step 8/8")
            explorer.get_by_role("button", name="Reload runs").click()
            expect(summary).to_have_text(re.compile(r"^3 runs, "), timeout=60_000)
            # In view first: plotly redraws a figure the page shows. 30 s was enough on idle
            # cores; beside a second copy of the suite the redraw took longer than that.
            explorer.locator(".js-plotly-plot").scroll_into_view_if_needed()
            wait_until(
                lambda: "of 3 runs" in (explorer.locator(".gtitle").first.text_content() or ""),
                120,
                "the front figure drew the new run",
            )
            shots.take("front-updated")

            # Stop: SIGTERM to the run's process group, which ends the run KILLED (within ~20 s).
            long_row.get_by_role("button", name="Stop").click()
            assert "progress-bar-warning" in wait_until(
                lambda: _ended(long_row), 90, "the stopped run shown ended"
            ), _row_state(long_row)
            assert _row_state(long_row)[0].startswith("killed")
            expect(long_row.get_by_role("button", name="Stop")).to_be_disabled(
                timeout=ROUND_TRIP_MS
            )
            long_row.scroll_into_view_if_needed()
            shots.take("stopped")

            client = tracking.connect(store_uri)
            assert client.get_run(long_id).info.status == "KILLED"
            short = client.get_run(short_id)
            assert short.info.status == "FINISHED"
            # The run trained with the weights the dragged slider showed.
            assert float(short.data.params["objectives.correctness.weight"]) == pytest.approx(
                correctness_weight
            )
            assert float(short.data.params["objectives.length.weight"]) == pytest.approx(
                length_weight
            )
            runs = tracking.runs_frame(client, "quickstart", status=None)
            assert sorted(r["status"] for r in runs) == ["FINISHED"] * 3 + ["KILLED"]
    finally:
        context.close()
        _stop_leftover_runs("quickstart")
        _stop(lab)
    assert "JupyterLab stopped" in (tmp_path / "lab.out").read_text()


# ------------------------------------------------------------------------- MLflow UI


def test_mlflow_ui_lists_the_runs(browser, store_uri, tmp_path, request):
    from workbench import tracking
    from workbench.spec.run_spec import RunSpec

    client = tracking.connect()
    spec = RunSpec.parse(fast_spec(tracking={"experiment": "in-the-browser"}))
    names = ["lean-and-right", "long-and-right"]
    ids = []
    for name, (correctness, length) in zip(names, [(0.9, 4.0), (1.0, 9.0)]):
        run_id = tracking.start_run(client, spec.updated(**{"tracking.run_name": name}))
        client.log_metric(run_id, "objective/correctness", correctness, step=10)
        client.log_metric(run_id, "objective/length", length, step=10)
        tracking.end_run(client, run_id, "FINISHED")
        ids.append(run_id)
    experiment_id = client.get_experiment_by_name("in-the-browser").experiment_id

    env = dict(os.environ, HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    # The MLflow server answers in ~6 s on 2 idle cores, 12-22 s beside other work.
    ui, url = _start(
        ["ui", "--port", "0"],
        env,
        tmp_path / "ui.out",
        r"MLflow UI on (http://127\.0\.0\.1:\d+)",
        180,
    )
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    shots = Screenshots(page, tmp_path / "screenshots")
    try:
        with shots.on_failure(request):
            # The runs table (an experiment opens on an overview without runs). The page polls
            # forever: wait for the elements, never for network idle. Its bundle loads and
            # renders in ~10 s on 2 loaded cores.
            page.goto(f"{url.group(1)}/#/experiments/{experiment_id}/runs")
            for name, run_id in zip(names, ids):
                link = page.locator(f"a[href*='{run_id}']", has_text=name)
                link.first.wait_for(timeout=120_000)
            shots.take("runs-table")
    finally:
        context.close()
        _stop(ui)
    assert "MLflow UI stopped" in (tmp_path / "ui.out").read_text()
