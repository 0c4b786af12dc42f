"""Single runs: in-process, launched and stopped, LoRA + export, bad input, DDP."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, run_cli, sqlite_uri, wait_until
from workbench import tracking
from workbench.methods.sft import losses as sft_losses
from workbench.running.launcher import attach, launch
from workbench.running.pipeline import run
from workbench.spec import registry
from workbench.spec.errors import RunFailed
from workbench.spec.run_spec import RunSpec


def test_in_process_run_returns_objectives_and_tracks_them(store_uri):
    result = run(fast_spec(), log=lambda *a: None)
    client = MlflowClient(store_uri)
    info = client.get_run(result.run_id)
    assert info.info.status == "FINISHED"
    assert set(result.objectives) == {"correctness", "length"}
    for name, value in result.objectives.items():
        assert info.data.metrics[f"objective/{name}"] == pytest.approx(value)
    assert [s for s, _ in result.trajectory] == [0, 5, 10]
    assert info.data.tags["workbench.method"] == "mo-sft"
    # This test process was started plainly: the run says it ran on the system allocator.
    assert info.data.tags["workbench.allocator"] == "system"
    assert "cost/trainable_params" in info.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"spec.yaml", "model", "samples"} <= artifacts


def _group_exists(pgid: int) -> bool:
    """Whether a live process is left in the group. Zombies do not count: they hold nothing
    but a pid, and one whose parent exited waits for the machine's init process to reap it,
    which some containers' init never does."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def test_launched_run_stops_killed_and_its_process_group_is_gone(store_uri):
    spec = fast_spec(train={"steps": 100_000, "eval_every": 100_000})
    handle = launch(spec)
    client = MlflowClient(store_uri)

    def trains():
        assert handle.status() == "RUNNING", Path(handle.log_path).read_text()[-2000:]
        return len(tracking.metric_history(client, handle.run_id, "train/loss")) >= 3

    # Start-up and 3 logged steps: about 10 s on 2 idle cores; 300 s for a loaded machine.
    wait_until(trains, 300, "the launched run logged 3 training losses", poll_s=0.5)
    if sys.platform.startswith("linux"):  # a launched run's process is started on mimalloc
        tags = client.get_run(handle.run_id).data.tags
        assert tags["workbench.allocator"].startswith("mimalloc "), tags
    again = attach(handle.run_id)  # as after a kernel restart
    assert again.pid == handle.pid and again.status() == "RUNNING"
    assert again.stop() == "KILLED"
    # The launching handle also reaps its child (it exits within stop's grace period).
    assert handle.wait(timeout=120) == "KILLED"
    # On a loaded machine the group's members can still be exiting when stop() returns:
    # wait for the condition (gone in well under a second when idle) instead of a moment.
    wait_until(lambda: not _group_exists(handle.pid), 60, "the run's whole process group is gone")
    assert client.get_run(handle.run_id).info.status == "KILLED"


def test_lora_run_exports_a_model_that_generates_the_same_tokens(store_uri, tmp_path):
    import mlflow
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workbench.data.tasks import TASKS
    from workbench.models.generation import generate
    from workbench.models.loading import load_base

    spec = fast_spec(
        adapter={"name": "lora", "r": 4},
        optimizer={"lr": 1e-2},
        method="sft",
        data={"source": "sort", "train_size": 100, "eval_size": 8},
        objectives=[
            {
                "name": "em",
                "direction": "max",
                "source": "metric:exact_match",
                "term": "completion",
                "reference": 0,
            }
        ],
    )
    result = run(spec, log=lambda *a: None)
    out = run_cli("export", result.run_id, str(tmp_path / "exported"))
    assert out.returncode == 0, out.stderr
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    assert not any("lora" in n for n, _ in exported.named_parameters())  # merged
    adapter_dir = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="model", dst_path=str(tmp_path / "adapter")
    )
    base = load_base(RunSpec.parse(spec).model, log=lambda *a: None)
    unmerged = PeftModel.from_pretrained(base.model, adapter_dir)
    rows = TASKS["sort"].heldout(8)
    assert generate(exported, base.tokenizer, rows) == generate(unmerged, base.tokenizer, rows)


def _store_is_empty(uri: str) -> bool:
    path = uri.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return True
    client = MlflowClient(uri)
    return all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_malformed_data_gets_a_clear_message_and_writes_nothing(store_uri, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": 7}\n')
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(data={"source": str(data)})))
    result = run_cli("run", str(spec_file))
    assert result.returncode == 2
    assert (
        "data.jsonl" in result.stderr and "row 2" in result.stderr and "completion" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert _store_is_empty(store_uri)


def test_bad_spec_gets_a_clear_message_and_writes_nothing(store_uri, tmp_path):
    spec = fast_spec(method="dpo-typo")
    spec["objectives"] = [
        {"name": "x", "direction": "max", "source": "metric:exact_match", "weight": -1}
    ]
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    result = run_cli("run", str(spec_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "method = 'dpo-typo'" in result.stderr
    assert (
        "allowed: " + ", ".join(sorted(m for m, i in registry.METHODS.items() if i.builtin))
        in result.stderr
    )
    assert "objectives.0.weight = -1" in result.stderr
    assert _store_is_empty(store_uri)


def test_an_unexpected_error_ends_the_run_failed_with_a_one_line_message(store_uri, monkeypatch):
    from workbench.running import pipeline as runner

    def broken(*args, **kwargs):
        raise RuntimeError("something deep went wrong")

    monkeypatch.setattr(runner, "evaluate", broken)
    with pytest.raises(
        RunFailed, match="RuntimeError: something deep went wrong.*error.txt"
    ) as caught:
        run(fast_spec(train={"steps": 2}), log=lambda *a: None)
    assert isinstance(caught.value.__cause__, RuntimeError)  # kept for debugging
    client = MlflowClient(store_uri)
    (failed,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert failed.info.status == "FAILED"
    assert "something deep went wrong" in failed.data.tags["workbench.error"]
    stored = client.download_artifacts(failed.info.run_id, "error.txt")
    assert "Traceback" in Path(stored).read_text()


def test_nan_loss_ends_the_run_failed_with_the_step(store_uri, monkeypatch):

    calls = {"n": 0}
    real = sft_losses.brevity_from_eos_logprobs

    def diverging(*args, **kwargs):  # the loss turns NaN on the 4th step, as a blow-up would
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] >= 4 else value

    monkeypatch.setattr(sft_losses, "brevity_from_eos_logprobs", diverging)
    with pytest.raises(RunFailed) as caught:
        run(fast_spec(train={"steps": 8, "eval_every": 100}), log=lambda *a: None)
    assert "at step 3" in str(caught.value)
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert runs[0].info.status == "FAILED" and "at step 3" in runs[0].data.tags["workbench.error"]


def test_ddp_two_processes_follow_the_single_process_trajectory(tmp_path):
    """2 CPU processes (gloo) x batch 4 == 1 process x batch 8, one MLflow run."""
    histories = {}
    for name, devices, batch in (("ddp", 2, 4), ("single", 1, 8)):
        uri = sqlite_uri(tmp_path / name)
        (tmp_path / name).mkdir()
        spec = fast_spec(
            train={
                "steps": 12,
                "batch_size": batch,
                "devices": devices,
                "strategy": "ddp" if devices > 1 else "auto",
                "accelerator": "cpu",
                "eval_every": 100,
            },
            tracking={"experiment": "ddp", "log_model": False},
        )
        spec_file = tmp_path / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(spec))
        result = run_cli(
            "run", str(spec_file), "--no-progress", env={"MLFLOW_TRACKING_URI": uri}, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        histories[name] = tracking.metric_history(client, runs[0].info.run_id, "train/loss")
    assert (
        [s for s, _ in histories["ddp"]]
        == [s for s, _ in histories["single"]]
        == list(range(1, 13))
    )
    histories = {k: [v for _, v in h] for k, h in histories.items()}
    ddp, single = torch.tensor(histories["ddp"]), torch.tensor(histories["single"])
    assert len(ddp) == len(single) == 12
    # Gradient all-reduce sums in a different order than one big batch: allow 1e-3 relative.
    torch.testing.assert_close(ddp, single, rtol=1e-3, atol=1e-4)


# A run's process that starts a helper which ignores SIGTERM, then waits: on SIGTERM the
# leader ends at once and the helper would live on.
LEADER_WITH_STUBBORN_HELPER = """
import subprocess, sys
helper = subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
helper.stdout.readline()
print(helper.pid, flush=True)
helper.wait()
"""


def test_stop_leaves_no_process_of_the_run_behind(store_uri):
    import subprocess
    import sys

    from workbench.running import liveness
    from workbench.running.launcher import RunHandle

    client = MlflowClient(store_uri)
    run_id = client.create_run(client.create_experiment("stop-test")).info.run_id
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER_WITH_STUBBORN_HELPER],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    helper_pid = int(leader.stdout.readline())
    handle = RunHandle(
        run_id, leader.pid, liveness.process_start(leader.pid), store_uri, popen=leader
    )
    assert handle.stop(grace_s=5) == "KILLED"

    def helper_gone():
        try:
            return psutil.Process(helper_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # Gone in well under a second when idle; 60 s for a loaded machine.
    wait_until(helper_gone, 60, "the helper the run started is gone")
