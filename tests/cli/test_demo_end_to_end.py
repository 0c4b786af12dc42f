"""`workbench demo` on the embedded defaults: a real front, tracked in MLflow.

The demo trains on the full-size tiny base, built once per session by the
``default_tiny_base`` fixture (its cold build is a test of its own:
tests/test_tiny_base_build.py), so the demo's deadline covers the demo's own work.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr

from tests.conftest import ROOT, run_cli, sqlite_uri
from workbench import tracking
from workbench.fronts.pareto import hypervolume, non_dominated


@pytest.fixture(scope="module")
def demo(tmp_path_factory, default_tiny_base):
    folder = tmp_path_factory.mktemp("demo")
    uri = sqlite_uri(folder)
    # 5 runs x 150 steps on the cached base: about 25 s on 2 idle cores; 600 s leaves room
    # for a machine loaded many times over. The session's WORKBENCH_CACHE is inherited.
    result = run_cli(
        "demo",
        "--no-progress",
        "--html",
        str(folder / "front.html"),
        env={"MLFLOW_TRACKING_URI": uri},
        cwd=folder,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, uri, result.stdout


def _children(client, uri):
    exp = client.get_experiment_by_name("demo")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("workbench.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("workbench.parent")]
    return parents, children


def test_demo_prints_front_and_writes_plot(demo):
    folder, _, stdout = demo
    assert "hypervolume" in stdout and "workbench ui" in stdout
    html = (folder / "front.html").read_text()
    # A small page that loads plotly.js from a file written beside it: offline, no CDN.
    (bundle,) = folder.glob("plotly-*.min.js")
    assert f'src="{bundle.name}"' in html and len(html) < 200_000
    assert bundle.stat().st_size > 1_000_000 and "cdn." not in html
    # The base model drawn beside the runs, and the runs labelled by their weight.
    assert "base model (before training)" in html, html[:2000]
    assert "correctness=0.1" in html and "correctness=0.9" in html


def test_demo_tracks_one_finished_run_per_sweep_point(demo):
    _, uri, _ = demo
    client = MlflowClient(uri)
    parents, children = _children(client, uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 5
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["workbench.parent"] == parents[0].info.run_id
        assert "spec.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
        for name in ("correctness", "length"):
            history = tracking.metric_history(client, run.info.run_id, f"objective/{name}")
            assert len(history) >= 3, history  # a trajectory: base, intermediate, final
        loss = tracking.metric_history(client, run.info.run_id, "train/loss")
        assert [s for s, _ in loss] == list(range(1, 151))  # every step's loss


def test_demo_front_is_real(demo):
    _, uri, _ = demo
    client = MlflowClient(uri)
    _, children = _children(client, uri)
    weights, points, base = [], [], None
    for run in children:
        weights.append(float(run.data.params["objectives.correctness.weight"]))
        points.append(
            [run.data.metrics["objective/correctness"], run.data.metrics["objective/length"]]
        )
        hist_c = tracking.metric_history(client, run.info.run_id, "objective/correctness")
        hist_l = tracking.metric_history(client, run.info.run_id, "objective/length")
        base = [hist_c[0][1], hist_l[0][1]]  # step 0: the base model, before training
    points = np.array(points)
    directions = ["max", "min"]
    assert non_dominated(points, directions).sum() >= 3
    brevity_weight = 1 - np.array(weights)
    assert spearmanr(weights, points[:, 0]).statistic >= 0.8
    assert spearmanr(brevity_weight, -points[:, 1]).statistic >= 0.8
    reference = [0.0, 14.0]
    assert hypervolume(points, directions, reference) > hypervolume(
        np.array([base]), directions, reference
    )


def test_front_command_reads_the_runs_back(demo, tmp_path):
    folder, uri, _ = demo
    result = run_cli(
        "front",
        "--experiment",
        "demo",
        "--html",
        str(tmp_path / "f.html"),
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr
    assert "hypervolume" in result.stdout and (tmp_path / "f.html").is_file()


def _table_rows(text: str) -> dict[str, tuple[float, float]]:
    """{run: (correctness, length)} from a demo table (README's or the demo's own output)."""
    return {
        m[1]: (float(m[2]), float(m[3]))
        for m in re.finditer(r"^(correctness=[0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", text, re.M)
    }


def test_readme_shows_what_the_demo_prints(demo):
    """The README's demo table and hypervolumes are the demo's output, within what another
    thread count or machine moves (greedy decoding can flip a few held-out prompts)."""
    _, _, stdout = demo
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated, printed = _table_rows(readme), _table_rows(stdout)
    assert stated and set(stated) == set(printed)
    for run, (correctness, length) in stated.items():
        assert abs(printed[run][0] - correctness) <= 0.1, (run, printed[run], stated[run])
        assert abs(printed[run][1] - length) <= 1.0, (run, printed[run], stated[run])
    pattern = (
        r"hypervolume \(reference correctness=0, length=14\): sweep ([0-9.]+), base model ([0-9.]+)"
    )
    stated_hv, printed_hv = re.search(pattern, readme), re.search(pattern, stdout)
    assert stated_hv and printed_hv
    for stated_value, printed_value in zip(stated_hv.groups(), printed_hv.groups()):
        assert abs(float(printed_value) - float(stated_value)) <= 0.1 * float(stated_value)
