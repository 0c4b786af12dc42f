"""workbench.tracking against a real MLflow sqlite store in tmp_path.

Creating a sqlite store runs MLflow's schema migrations (about 2 s), so one store is made
per session and its empty database copied into each test's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from tests.conftest import sqlite_uri, wait_until
from workbench import tracking
from workbench.spec import mlflow_names
from workbench.spec.errors import TrackingError
from workbench.spec.run_spec import RunSpec


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template-store")
    with pytest.MonkeyPatch.context() as patch:  # MLFLOW_TRACKING_URI wins over an argument
        patch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(folder))
        tracking.connect()
    return folder / "mlflow.db"


@pytest.fixture
def store(tmp_path, empty_db, monkeypatch) -> Path:
    """A fresh store folder holding mlflow.db; MLFLOW_TRACKING_URI points at it."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(empty_db, folder / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(folder))
    return folder


@pytest.fixture
def client(store):
    return tracking.connect()


def _spec(**tracking_fields) -> RunSpec:
    return RunSpec(tracking={"experiment": "tests", **tracking_fields})


def _new_recorder(client, flush_every_s=0.05, max_buffer=64, **spec_fields):
    run_id = tracking.start_run(client, _spec(**spec_fields))
    # No heartbeat during these tests: they count exactly the points and tags they log.
    return tracking.RunRecorder(
        client, run_id, flush_every_s=flush_every_s, max_buffer=max_buffer, heartbeat_every_s=3600
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_run_logs_tags_params_and_spec(client, tmp_path):
    spec = RunSpec(
        model={"name": "x" * 7000},  # longer than MLflow's param value limit
        tracking={"experiment": "tests", "run_name": "first", "tags": {"team": "a"}},
    )
    parent = tracking.start_run(client, _spec(run_name="sweep"))
    run_id = tracking.start_run(client, spec, parent_run_id=parent, extra_tags={"trial": "3"})
    run = client.get_run(run_id)

    assert run.info.run_name == "first"
    assert run.info.status == "RUNNING"
    tags = run.data.tags
    assert tags["workbench.method"] == spec.method.name
    assert tags["workbench.adapter"] == spec.adapter.name
    assert tags["workbench.optimizer"] == spec.optimizer.name
    assert tags["workbench.parent"] == parent
    assert tags["mlflow.parentRunId"] == parent
    assert tags["team"] == "a" and tags["trial"] == "3"

    params = run.data.params
    expected = spec.flat_params()
    assert set(params) == set(expected)
    assert len(params["model.name"]) == tracking.MAX_PARAM_VAL_LENGTH
    assert all(params[k] == v for k, v in expected.items() if k != "model.name")

    local = client.download_artifacts(run_id, "spec.yaml", str(tmp_path))
    assert RunSpec.from_yaml(Path(local).read_text()) == spec


@pytest.mark.parametrize(
    "spec, name",
    [
        ({}, "mo-sft order correctness=0.5"),  # the default spec: two weighted objectives
        (
            {"data": {"source": "explain"}},
            "mo-sft explain correctness=0.4,explanation=0.4,length=0.2",
        ),
        ({"method": "dpo", "data": {"source": "reverse"}}, "dpo reverse"),
        ({"method": "sft", "data": {"source": "data/answers.jsonl"}}, "sft answers.jsonl"),
        ({"method": "dpo", "tracking": {"run_name": "mine"}}, "mine"),  # the user's name wins
    ],
)
def test_a_run_is_named_after_what_it_is_never_at_random(client, spec, name):
    spec = RunSpec.parse({**spec, "tracking": {"experiment": "tests", **spec.get("tracking", {})}})
    run = client.get_run(tracking.start_run(client, spec))
    assert run.info.run_name == run.data.tags["mlflow.runName"] == name


def test_experiments_are_marked_as_model_development_for_mlflows_ui(client):
    from workbench.tracking.naming import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    created = tracking.ensure_experiment(client, "made-here")
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    # One made elsewhere is marked when the workbench opens it; a kind someone chose is kept.
    older = client.create_experiment("made-before")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert tracking.ensure_experiment(client, "made-before") == older
    tracking.ensure_experiment(client, "chosen")
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_recorder_delivers_every_point_with_its_step(client):
    rec = _new_recorder(client)
    for step in range(500):
        rec.log_metrics({"train/loss": 1.0 / (step + 1), "objective/acc": step / 500}, step=step)
    rec.finish("FINISHED")

    history = tracking.metric_history(client, rec.run_id, "train/loss")
    assert history == [(step, 1.0 / (step + 1)) for step in range(500)]
    assert [s for s, _ in tracking.metric_history(client, rec.run_id, "objective/acc")] == list(
        range(500)
    )
    (row,) = tracking.runs_frame(client, "tests")
    assert row["run_id"] == rec.run_id and row["status"] == "FINISHED"
    assert row["objectives"] == {"acc": pytest.approx(499 / 500)}
    assert row["params"]["tracking.experiment"] == "tests"


def test_a_resumed_recorder_logs_only_what_the_store_lacks(client):
    # A run killed part-way through sending step 3: its loss reached the store, its
    # objective did not.
    first = _new_recorder(client)
    for step in (1, 2, 3):
        first.log_metrics({"train/loss": step / 10}, step=step)
    for step in (1, 2):
        first.log_metrics({"objective/acc": step / 100}, step=step)
    first.finish("FAILED", "killed")  # as the reaper ends it
    stored = tracking.last_steps(client, first.run_id)
    assert stored == {"train/loss": 3, "objective/acc": 2}

    client.update_run(first.run_id, status="RUNNING")  # what resume does
    resumed = tracking.RunRecorder(
        client, first.run_id, skip_through_step=stored, heartbeat_every_s=3600
    )
    for step in (2, 3, 4):  # replayed from a checkpoint at step 1
        resumed.log_metrics({"train/loss": step / 10, "objective/acc": step / 100}, step=step)
    resumed.finish("FINISHED")
    assert tracking.metric_history(client, first.run_id, "train/loss") == [
        (1, 0.1),
        (2, 0.2),
        (3, 0.3),
        (4, 0.4),
    ]
    assert tracking.metric_history(client, first.run_id, "objective/acc") == [
        (1, 0.01), (2, 0.02), (3, 0.03), (4, 0.04)
    ]  # fmt: skip


def test_log_metrics_does_no_io_on_the_calling_thread(client, monkeypatch):
    rec = _new_recorder(client, flush_every_s=60.0, max_buffer=10_000)
    calls = []
    monkeypatch.setattr(client, "log_batch", lambda *a, **k: calls.append(k))
    for step in range(200):
        rec.log_metrics({"train/loss": 0.5}, step=step)
    assert calls == [] and rec.pending == 200
    monkeypatch.undo()
    rec.finish()
    assert len(tracking.metric_history(client, rec.run_id, "train/loss")) == 200


def test_a_bad_metric_name_fails_on_the_calling_thread(client):
    with _new_recorder(client) as rec:
        with pytest.raises(TrackingError, match="rejects the key"):
            rec.log_metrics({"train/loss?": 1.0}, step=0)
        rec.log_metrics({"train/loss": 1.0}, step=0)
    assert tracking.metric_history(client, rec.run_id, "train/loss") == [(0, 1.0)]


def test_context_manager_ends_runs_finished_failed_killed(client):
    with _new_recorder(client, run_name="ok") as ok:
        ok.log_metrics({"train/loss": 1.0}, step=0)

    with pytest.raises(ValueError, match="boom"), _new_recorder(client, run_name="bad") as bad:
        raise ValueError("boom")

    with pytest.raises(KeyboardInterrupt), _new_recorder(client, run_name="stop") as stop:
        raise KeyboardInterrupt

    bad.finish("FINISHED")  # a second finish is a no-op
    runs = {
        r.info.run_id: r
        for r in client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    }
    assert runs[ok.run_id].info.status == "FINISHED"
    assert runs[stop.run_id].info.status == "KILLED"
    assert runs[bad.run_id].info.status == "FAILED"
    assert runs[bad.run_id].data.tags["workbench.error"] == "ValueError: boom"
    assert "workbench.error" not in runs[ok.run_id].data.tags
    error_txt = client.download_artifacts(bad.run_id, "error.txt")
    text = Path(error_txt).read_text()
    assert "Traceback" in text and "ValueError: boom" in text

    assert [r["run_id"] for r in tracking.runs_frame(client, "tests")] == [ok.run_id]
    failed = tracking.runs_frame(client, "tests", status="FAILED")
    assert [r["run_id"] for r in failed] == [bad.run_id]
    assert len(tracking.runs_frame(client, "tests", status=None)) == 3
    assert tracking.runs_frame(client, "no-such-experiment") == []


def test_end_run_from_outside_and_children_filter(client):
    parent = tracking.start_run(client, _spec(run_name="study"))
    child = tracking.start_run(client, _spec(run_name="trial"), parent_run_id=parent)
    tracking.end_run(client, child, "FAILED", error="process 123 died (exit -9)")
    tracking.end_run(client, parent, "FINISHED")

    run = client.get_run(child)
    assert run.info.status == "FAILED"
    assert run.data.tags["workbench.error"] == "process 123 died (exit -9)"
    kids = tracking.runs_frame(client, "tests", parent_run_id=parent, status="FAILED")
    assert [r["run_id"] for r in kids] == [child]
    assert tracking.runs_frame(client, "tests", parent_run_id=parent) == []
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        tracking.end_run(client, child, "DONE")


def test_artifacts_land_next_to_the_db_not_in_cwd(store, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client = tracking.connect()  # resolves MLFLOW_TRACKING_URI
    local = tmp_path / "to-upload"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "weights.txt").write_text("w")

    with _new_recorder(client) as rec:
        rec.log_metrics({"train/loss": 1.0}, step=0)
        rec.set_tags({"workbench.kernels": "rms_norm"})
        rec.log_text("hello", "notes/hello.txt")
        rec.log_dict({"a": 1}, "summary.json")
        rec.log_table(
            [{"prompt": "1 2", "completion": "3"}, {"prompt": "4", "step": 5}], "samples.json"
        )
        rec.log_artifacts(local, "model")

    assert list(elsewhere.iterdir()) == []
    root = store / "artifacts" / rec.run_id / "artifacts"
    for name in (
        "spec.yaml",
        "notes/hello.txt",
        "summary.json",
        "samples.json",
        "model/sub/weights.txt",
    ):
        assert (root / name).is_file(), name
    table = json.loads((root / "samples.json").read_text())
    assert table["columns"] == ["prompt", "completion", "step"]
    assert len(table["data"]) == 2
    assert client.get_run(rec.run_id).data.tags["workbench.kernels"] == "rms_norm"


def test_unreachable_server_fails_fast_with_the_fix(monkeypatch, tmp_path):
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(name, "unset")  # so that teardown restores the original state
        monkeypatch.delenv(name)
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        tracking.connect()
    # Under a second when idle; MLflow's default retries would take minutes. 30 s tells the
    # two apart on a loaded machine too.
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert f"cannot reach the MLflow server at {uri}" in message
    assert "workbench ui" in message and "unset MLFLOW_TRACKING_URI" in message
    # MLflow's own retries are cut down for later calls (it would retry for minutes).
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


def test_file_store_uri_is_a_tracking_error(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TrackingError, match="sqlite"):
        tracking.connect(f"file:{tmp_path}/mlruns")


def _failing(calls: list, fail_times: float, real):
    def log_batch(*args, **kwargs):
        calls.append(len(kwargs.get("metrics", ())))
        if len(calls) <= fail_times:
            raise MlflowException("Connection refused (simulated)")
        return real(*args, **kwargs)

    return log_batch


def test_failed_flush_keeps_points_and_retries(client, monkeypatch):
    rec = _new_recorder(client, flush_every_s=60.0, max_buffer=10_000)
    calls: list[int] = []
    monkeypatch.setattr(client, "log_batch", _failing(calls, 2, client.log_batch))
    for step in range(300):
        rec.log_metrics({"train/loss": float(step)}, step=step)

    assert rec.flush() is False
    assert rec.pending == 300 and "simulated" in rec.last_flush_error
    rec.log_metrics({"train/loss": 300.0}, step=300)
    assert rec.flush() is False
    assert rec.pending == 301
    assert rec.flush() is True
    assert rec.pending == 0 and rec.last_flush_error is None
    rec.finish()
    assert rec.fallback_path is None
    assert tracking.metric_history(client, rec.run_id, "train/loss") == [
        (s, float(s)) for s in range(301)
    ]


def test_background_thread_retries_after_failures(client, monkeypatch):
    rec = _new_recorder(client, flush_every_s=0.05)
    calls: list[int] = []
    monkeypatch.setattr(client, "log_batch", _failing(calls, 3, client.log_batch))
    for step in range(100):
        rec.log_metrics({"train/loss": 1.0}, step=step)
    # Three failed sends, then one that works: well under a second when idle.
    wait_until(lambda: rec.pending == 0, 60, "the background thread sent every point", poll_s=0.02)
    assert len(calls) >= 4
    rec.finish()
    assert len(tracking.metric_history(client, rec.run_id, "train/loss")) == 100


def test_finish_writes_unsent_points_to_a_fallback_file(client, store, monkeypatch):
    rec = _new_recorder(client, flush_every_s=0.05)
    real_log_batch = client.log_batch
    monkeypatch.setattr(client, "log_batch", _failing([], float("inf"), real_log_batch))
    for step in range(500):
        rec.log_metrics({"train/loss": step / 10}, step=step)
    rec.set_tags({"workbench.kernels": "none"})
    with pytest.warns(RuntimeWarning, match="replay_fallback") as warned:
        rec.finish("FINISHED")
    rec.finish("FINISHED")  # no second warning, no second file

    path = rec.fallback_path
    assert path is not None and path.parent == store / "unsent"
    assert str(path) in str(warned[0].message)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    metrics = [r for r in records if r["kind"] == "metric"]
    assert sorted(r["step"] for r in metrics) == list(range(500))
    assert {r["key"]: r["value"] for r in records if r["kind"] == "tag"} == {
        "workbench.kernels": "none"
    }
    # set_terminated still worked here, so the file holds no end record.
    assert client.get_run(rec.run_id).info.status == "FINISHED"
    assert not any(r["kind"] == "end" for r in records)

    monkeypatch.setattr(client, "log_batch", real_log_batch)
    assert tracking.replay_fallback(path, client) == rec.run_id
    assert not path.exists()
    assert tracking.metric_history(client, rec.run_id, "train/loss") == [
        (s, s / 10) for s in range(500)
    ]
    assert client.get_run(rec.run_id).data.tags["workbench.kernels"] == "none"


def test_fallback_records_the_end_when_the_store_is_gone(client, monkeypatch):
    rec = _new_recorder(client, flush_every_s=60.0)
    rec.log_metrics({"train/loss": 1.0}, step=7)
    real = {name: getattr(client, name) for name in ("log_batch", "set_terminated", "set_tag")}

    def gone(*args, **kwargs):
        raise MlflowException("Connection refused (simulated)")

    for name in real:
        monkeypatch.setattr(client, name, gone)
    with pytest.warns(RuntimeWarning, match="end status"):
        rec.finish("FAILED", "RuntimeError: out of memory")
    records = [json.loads(line) for line in rec.fallback_path.read_text().splitlines()]
    (end,) = [r for r in records if r["kind"] == "end"]
    assert end["status"] == "FAILED" and end["error"] == "RuntimeError: out of memory"

    for name, fn in real.items():
        monkeypatch.setattr(client, name, fn)
    tracking.replay_fallback(rec.fallback_path, client)
    run = client.get_run(rec.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["workbench.error"] == "RuntimeError: out of memory"
    assert tracking.metric_history(client, rec.run_id, "train/loss") == [(7, 1.0)]


def test_recorder_refreshes_a_heartbeat_tag(client):
    run_id = tracking.start_run(client, _spec())
    recorder = tracking.RunRecorder(client, run_id, flush_every_s=0.05, heartbeat_every_s=0.1)
    first = None

    def refreshed() -> bool:
        nonlocal first
        beat = client.get_run(run_id).data.tags.get(mlflow_names.HEARTBEAT_TAG)
        if first is None and beat is not None:
            first = float(beat)
        return first is not None and beat is not None and float(beat) > first

    # A beat every 0.1 s: refreshed within a second when idle.
    wait_until(refreshed, 60, "the heartbeat tag was refreshed", poll_s=0.1)
    recorder.finish("FINISHED")
