"""An experiment archived to one file and replayed into another store shows the same runs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tests.conftest import fast_spec, sqlite_uri
from workbench import tracking
from workbench.cli.main import main as cli
from workbench.fronts import finished_runs as fronts
from workbench.spec import mlflow_names
from workbench.spec.errors import TrackingError
from workbench.spec.run_spec import RunSpec
from workbench.tracking import replay


def _sweep(client, experiment="class"):
    """A parent with three children (two objectives, three evaluations each, a samples table),
    one failed child, and one run still RUNNING; returns (parent id, child ids)."""
    spec = RunSpec.parse(fast_spec(tracking={"experiment": experiment}))
    parent = tracking.start_run(
        client,
        spec.updated(**{"tracking.run_name": "sweep"}),
        extra_tags={"workbench.kind": "sweep"},
    )
    children = []
    for i, (correctness, length) in enumerate([(0.2, 3.0), (0.7, 9.0), (0.5, 4.0)]):
        run_id = tracking.start_run(
            client, spec.updated(**{"tracking.run_name": f"w{i}"}), parent_run_id=parent
        )
        for step in (0, 5, 10):
            client.log_metric(
                run_id, "objective/correctness", correctness * (step + 1) / 11, step=step
            )
            client.log_metric(run_id, "objective/length", length, step=step)
            client.log_metric(run_id, "train/loss", 2.0 / (step + 1), step=step)
        client.log_table(
            run_id, {"prompt": ["1+1="], "completion": [f"{i}"]}, "samples/step_000010.json"
        )
        tracking.end_run(client, run_id, "FINISHED")
        children.append(run_id)
    failed = tracking.start_run(
        client, spec.updated(**{"tracking.run_name": "broken"}), parent_run_id=parent
    )
    tracking.end_run(client, failed, "FAILED", error="DataError: row 3 has no completion")
    tracking.start_run(client, spec.updated(**{"tracking.run_name": "unfinished"}))
    client.log_metric(parent, "sweep/hypervolume", 0.42)
    tracking.end_run(client, parent, "FINISHED")
    return parent, children + [failed]


def _comparable(runs):
    """The runs as plain data without their ids (which a replay renews)."""
    ids = {r["run_id"]: r["run_name"] for r in runs}
    out = {}
    for r in runs:
        tags = {k: ids.get(v, v) for k, v in r["tags"].items() if k != "mlflow.user"}
        out[r["run_name"]] = (
            r["status"],
            r["start_time"],
            r["end_time"],
            tags,
            r["params"],
            r["metrics"],
        )
    return out


def test_archive_and_replay_round_trip(tmp_path, monkeypatch):
    source = sqlite_uri(tmp_path / "teacher")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", source)
    teacher = tracking.connect()
    parent, children = _sweep(teacher)
    before = tracking.runs_frame(teacher, "class", status=None)

    file = tmp_path / "class.zip"
    summary = replay.archive_experiment("class", file, max_artifact_mb=0.0005)
    assert summary.runs == 5 and summary.skipped_runs == ["unfinished (RUNNING)"]
    assert summary.metric_points == 3 * 3 * 3 + 1
    assert not list(tmp_path.glob(".class.zip.*"))  # no partial file left beside it
    # The spec of every run fits under the limit; nothing else was that small.
    assert summary.artifacts + len(summary.skipped_artifacts) == sum(
        len(list(replay.artifact_files(teacher, r["run_id"])))
        for r in before
        if r["status"] != "RUNNING"
    )

    target = sqlite_uri(tmp_path / "room")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target)
    result = replay.replay_archive(file)
    room = tracking.connect()
    after = tracking.runs_frame(room, "class", status=None)
    assert _comparable(after) == _comparable([r for r in before if r["status"] != "RUNNING"])
    # Children point at the parent's new id, in both parent tags; histories are whole.
    new_parent = result.run_ids[parent]
    for old in children:
        tags = room.get_run(result.run_ids[old]).data.tags
        assert tags[mlflow_names.TAG_PARENT] == tags["mlflow.parentRunId"] == new_parent
    old_points = [
        (m.step, m.value) for m in teacher.get_metric_history(children[1], "objective/correctness")
    ]
    new_points = [
        (m.step, m.value)
        for m in room.get_metric_history(result.run_ids[children[1]], "objective/correctness")
    ]
    assert sorted(new_points) == sorted(old_points) and len(new_points) == 3
    # The same front, from the same function the explorer uses.
    front_before = fronts.front_from_runs(
        tracking.runs_frame(teacher, "class"), ["correctness", "length"]
    )
    front_after = fronts.front_from_runs(
        tracking.runs_frame(room, "class"), ["correctness", "length"]
    )
    np.testing.assert_array_equal(front_after.points, front_before.points)
    assert front_after.mask.tolist() == front_before.mask.tolist()


def test_replayed_runs_keep_their_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "a"))
    _, children = _sweep(tracking.connect())
    file = tmp_path / "class.zip"
    replay.archive_experiment("class", file)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "b"))
    result = replay.replay_archive(file, experiment="class-replayed")
    room = tracking.connect()
    new_id = result.run_ids[children[0]]
    from workbench.widgets.run_compare_logic import download_text, last_samples

    assert "model:" in download_text(room, new_id, mlflow_names.SPEC_ARTIFACT)
    assert last_samples(room, new_id) == [{"prompt": "1+1=", "completion": "0"}]
    assert "row 3 has no completion" in download_text(
        room, result.run_ids[children[3]], mlflow_names.ERROR_ARTIFACT
    )


def test_bad_archives_and_names_give_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(tmp_path / "s"))
    _sweep(tracking.connect())
    with pytest.raises(TrackingError, match="no experiment 'clas'.*has: .*class"):
        replay.archive_experiment("clas", tmp_path / "x.zip")
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("hello")
    with pytest.raises(TrackingError, match="not an experiment archive"):
        replay.read_manifest(not_zip)
    with pytest.raises(TrackingError, match="no archive at"):
        replay.read_manifest(tmp_path / "missing.zip")

    file = tmp_path / "class.zip"
    assert cli(["archive", "class", str(file)]) == 0
    assert "5 runs" in capsys.readouterr().out
    # Replaying into the store that has the experiment already names the fix.
    assert cli(["replay", str(file)]) == 2
    assert "--experiment NEW_NAME" in capsys.readouterr().err
    assert cli(["replay", str(file), "--experiment", "copy"]) == 0
    assert len(tracking.runs_frame(tracking.connect(), "copy", status=None)) == 5

    # An archive whose artifact went missing is refused before anything is written.
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(file) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.namelist():
            if not item.endswith("spec.yaml"):
                dst.writestr(item, src.read(item))
    with pytest.raises(TrackingError, match="incomplete"):
        replay.replay_archive(broken, experiment="never")
    assert tracking.connect().get_experiment_by_name("never") is None
