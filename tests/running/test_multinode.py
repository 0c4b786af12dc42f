"""Runs across nodes: torchrun with two node ranks on this machine, and sharded strategies.

Two ``torchrun --nnodes 2 --nproc-per-node 1`` processes (node ranks 0 and 1, a static
rendezvous on 127.0.0.1, gloo) stand for two machines. One two-node run is shared by the
tests that only read it (module-scoped), to pay the processes' start-up once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import fast_spec, sqlite_uri, wait_until
from tests.running.test_faults import HELD_RUN
from workbench import tracking
from workbench.cli.main import main
from workbench.methods.sft import losses as sft_losses
from workbench.running import allocator, checkpoints
from workbench.serving.servers import free_port
from workbench.spec import paths
from workbench.spec.errors import SpecError

STEPS = 40
# Batch 4 on each of 2 nodes against batch 8 in one process: the same global batches.
TWO_NODES = fast_spec(
    train={
        "steps": STEPS,
        "batch_size": 4,
        "devices": 1,
        "num_nodes": 2,
        "accelerator": "cpu",
        "checkpoint_every": 5,
        "eval_every": 20,
    },
    tracking={"experiment": "two-nodes", "log_model": False},
)
ONE_PROCESS = fast_spec(
    train={"steps": STEPS, "batch_size": 8, "accelerator": "cpu", "eval_every": 20},
    tracking={"experiment": "one-process", "log_model": False},
)
# Start-up of two torchrun agents and their workers (imports, the fast base, data) and 40 steps:
# 55 s measured on 2 cores loaded about 2.5-fold by other work; generous for a busier machine.
RUN_DEADLINE_S = 420


def _node(rank: int, port: int, args: list[str], folder: Path, env: dict) -> subprocess.Popen:
    """One node's torchrun in its own process session (so the test can kill the whole node)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        f"--node-rank={rank}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        *args,
    ]
    log = open(folder / f"node{rank}.log", "wb")  # noqa: SIM115 (closed when the process is reaped)
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=folder,
        env=env,
        start_new_session=True,
    )


def _start_nodes(folder: Path, args: list[str], env: dict) -> list[subprocess.Popen]:
    port = free_port()
    return [_node(rank, port, args, folder, env) for rank in (0, 1)]


def _finish(nodes: list[subprocess.Popen], seconds: float) -> list[int]:
    """Wait for every node's exit (killing what is left after ``seconds``); their exit codes."""
    try:
        wait_until(
            lambda: all(n.poll() is not None for n in nodes),
            seconds,
            "the nodes exited",
            poll_s=0.5,
        )
    finally:
        _kill(nodes)
    return [n.returncode for n in nodes]


def _kill(nodes: list[subprocess.Popen]) -> None:
    """SIGKILL whole nodes: each torchrun agent with its workers (which torchrun starts in
    sessions of their own, so killing the agent's process group alone would leave them)."""
    for node in nodes:
        if node.poll() is None:
            for pid in [*_descendants(node.pid), node.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            node.wait()


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- node {r} ---\n" + (folder / f"node{r}.log").read_text()[-3000:] for r in (0, 1)
    )


def _env(uri: str, **extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri, **extra}


def _runs(client: MlflowClient, experiment: str):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _losses(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return tracking.metric_history(client, run_id, "train/loss")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A store of the single-process reference run and one for the two-node runs."""
    from workbench.running.pipeline import run

    folder = tmp_path_factory.mktemp("multinode")
    uri = sqlite_uri(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        # In this process first: it also builds the fast base, which the nodes then share.
        reference = run(ONE_PROCESS, log=lambda *a: None)
    return folder, uri, reference.run_id


@pytest.fixture(scope="module")
def two_node_run(stores):
    """`workbench run` of TWO_NODES under two torchrun node ranks, run to the end."""
    folder, uri, _ = stores
    (folder / "two_nodes.yaml").write_text(yaml.safe_dump(TWO_NODES))
    nodes = _start_nodes(
        folder, ["-m", "workbench.cli", "run", "two_nodes.yaml", "--no-progress"], _env(uri)
    )
    codes = _finish(nodes, RUN_DEADLINE_S)
    assert codes == [0, 0], _logs(folder)
    return MlflowClient(uri)


@pytest.mark.slow
def test_two_nodes_follow_the_single_process_trajectory_in_one_run(stores, two_node_run):
    _, _, reference_id = stores
    client = two_node_run
    runs = _runs(client, "two-nodes")
    assert len(runs) == 1, [r.info.run_id for r in runs]  # rank 1 created no run
    assert runs[0].info.status == "FINISHED"
    two_nodes, single = _losses(client, runs[0].info.run_id), _losses(client, reference_id)
    assert [s for s, _ in two_nodes] == [s for s, _ in single] == list(range(1, STEPS + 1))
    # The gradient all-reduce sums the two halves in another order than one batch of 8 does:
    # float32 rounding only. Measured: largest relative difference 1.2e-7 over 40 steps.
    torch.testing.assert_close(
        torch.tensor([v for _, v in two_nodes]),
        torch.tensor([v for _, v in single]),
        rtol=1e-5,
        atol=0,
    )
    # Only finished runs lose their checkpoints; this one kept none.
    assert checkpoints.last(paths.checkpoint_dir(client.tracking_uri) / runs[0].info.run_id) is None


@pytest.mark.slow
def test_a_killed_node_ends_the_run_failed_and_resume_on_both_nodes_finishes_it(
    stores, two_node_run, tmp_path
):
    _, uri, _ = stores
    client = two_node_run
    spec = {**TWO_NODES, "tracking": {"experiment": "killed-node", "log_model": False}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "held_run.py").write_text(HELD_RUN)
    hold_at = 12  # after the checkpoint of step 10
    # On mimalloc, as `workbench run` restarts itself: the held run then fuses the ops the
    # uninterrupted `workbench run` fused (kernels: auto chooses a CPU's ops by the allocator),
    # and its resume keeps them, for the very same numbers.
    env = allocator.preload_environment(_env(uri, HOLD_STEP=str(hold_at), HOLD_DIR=str(tmp_path)))
    nodes = _start_nodes(tmp_path, ["held_run.py", "spec.yaml"], env)
    try:
        wait_until(
            lambda: (tmp_path / "held").is_file() or any(n.poll() is not None for n in nodes),
            RUN_DEADLINE_S,
            f"rank 0 reached step {hold_at}",
            poll_s=0.5,
        )
        assert (tmp_path / "held").is_file(), _logs(tmp_path)
        run_id = _runs(client, "killed-node")[0].info.run_id
        _kill(nodes[1:])  # node 1 is gone: its agent and its worker
        (tmp_path / "release").write_text("")  # rank 0 trains on into a collective with no peer
        # Rank 0's next collective fails as soon as it finds the peer's connection closed
        # (measured: FAILED 0.6 s after the release, on 2 cores loaded eightfold); a peer that
        # vanished without closing it would take train.dist_timeout_s.
        wait_until(
            lambda: client.get_run(run_id).info.status != "RUNNING",
            120,
            "the run ended after node 1 was killed",
            poll_s=0.5,
        )
        assert client.get_run(run_id).info.status == "FAILED", _logs(tmp_path)
        assert _finish(nodes[:1], 60) != [0]
    finally:
        _kill(nodes)
    assert max(s for s, _ in _losses(client, run_id)) <= hold_at

    resumed = _start_nodes(
        tmp_path, ["-m", "workbench.cli", "resume", run_id, "--no-progress"], _env(uri)
    )
    assert _finish(resumed, RUN_DEADLINE_S) == [0, 0], _logs(tmp_path)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(_runs(client, "killed-node")) == 1
    steps = [s for s, _ in _losses(client, run_id)]
    assert steps == list(range(1, STEPS + 1))  # no step missing, none twice
    uninterrupted = _runs(client, "two-nodes")[0].info.run_id
    torch.testing.assert_close(
        torch.tensor([v for _, v in _losses(client, run_id)]),
        torch.tensor([v for _, v in _losses(client, uninterrupted)]),
        rtol=0,
        atol=0,
    )


def test_run_of_a_multi_node_spec_prints_the_command_for_each_node(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(TWO_NODES))
    assert main(["run", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    for rank in (0, 1):
        assert (
            f"torchrun --nnodes=2 --nproc-per-node=1 --node-rank={rank} --master-addr=MASTER_ADDR "
            f"--master-port=MASTER_PORT -m workbench.cli run {tmp_path / 'spec.yaml'}"
        ) in out
    assert "--node-rank=2" not in out


def test_a_multi_node_spec_outside_a_launcher_is_refused_in_process():
    from workbench.running.pipeline import run

    with pytest.raises(
        SpecError, match="train.num_nodes = 2: a run across nodes is started on every node"
    ):
        run(TWO_NODES, log=lambda *a: None)


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_cpu_offload"])
def test_fsdp_on_cpu_is_refused_before_anything_starts(strategy, tmp_path, capsys, store_uri):
    spec = fast_spec(train={"devices": 2, "strategy": strategy, "accelerator": "cpu"})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "spec.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"  train.strategy = {strategy!r}: "), err
    assert "CUDA GPUs only" in err[-1] and "use strategy: ddp on CPUs" in err[-1]
    assert MlflowClient(store_uri).search_experiments(filter_string="name = 'tests'") == []


def test_export_of_a_stopped_run_merges_its_checkpoint_whether_one_file_or_shards(
    store_uri, tmp_path, monkeypatch
):
    """A failed run stored no model: export takes its last checkpoint. A sharded checkpoint
    (what FSDP writes: torch.distributed.checkpoint shards plus Lightning's meta.pt) exports
    the same full model as the single file holding the same weights."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    from workbench.running.export import export_run
    from workbench.running.pipeline import run
    from workbench.spec.errors import RunFailed

    calls = {"n": 0}
    real = sft_losses.brevity_from_eos_logprobs

    def diverging(*args, **kwargs):  # NaN at step 7, after the checkpoint of step 5
        calls["n"] += 1
        return real(*args, **kwargs) * (float("nan") if calls["n"] >= 7 else 1.0)

    monkeypatch.setattr(sft_losses, "brevity_from_eos_logprobs", diverging)
    with pytest.raises(RunFailed) as failed:
        run(
            fast_spec(train={"steps": 10, "checkpoint_every": 5, "eval_every": 100}),
            log=lambda *a: None,
        )
    run_id = str(failed.value).split()[1]
    run_folder = paths.checkpoint_dir(store_uri) / run_id
    one_file = checkpoints.last(run_folder)
    assert one_file is not None and one_file.is_file() and checkpoints.step(one_file) == 5
    trained = checkpoints.model_state(one_file)

    exported = load_file(export_run(run_id, tmp_path / "from_file") / "model.safetensors")
    # Every stored tensor (a head tied to the embeddings is stored once) is the checkpoint's.
    assert len(exported) >= len(trained) - 1 and set(exported) <= set(trained)
    assert all(torch.equal(exported[k], trained[k]) for k in exported)

    whole = torch.load(one_file, weights_only=True)
    shards = tmp_path / "sharded.partial"
    dcp.save(
        {"model": whole.pop("state_dict"), "optimizer_0": whole.pop("optimizer_states")[0]},
        checkpoint_id=shards,
    )
    torch.save(whole, shards / checkpoints.SHARDED_METADATA)
    checkpoints.publish(shards, run_folder)
    sharded = checkpoints.last(run_folder)
    assert sharded.is_dir() and checkpoints.step(sharded) == 5
    merged = load_file(export_run(run_id, tmp_path / "from_shards") / "model.safetensors")
    assert merged.keys() == exported.keys()
    assert all(torch.equal(merged[k], trained[k]) for k in merged)


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="FSDP runs on CUDA GPUs only (torch's FSDP refuses CPUs)"
)
def test_fsdp_on_a_gpu_follows_the_plain_run_checkpoints_shards_resumes_and_exports(
    store_uri, tmp_path, monkeypatch
):
    """One GPU: the FSDP run's losses match a plain run's; a run failed at step 7 left a
    sharded checkpoint of step 4 that exports as one full model and resumes to the end."""
    from safetensors.torch import load_file

    from workbench.running.export import export_run
    from workbench.running.pipeline import resume, run
    from workbench.spec.errors import RunFailed

    train = {
        "steps": 8,
        "checkpoint_every": 4,
        "eval_every": 100,
        "accelerator": "gpu",
        "devices": 1,
    }
    plain = run(fast_spec(train=train), log=lambda *a: None)
    calls = {"n": 0}
    real = sft_losses.brevity_from_eos_logprobs

    def diverging(*args, **kwargs):  # NaN at step 7 of the first attempt only
        calls["n"] += 1
        return real(*args, **kwargs) * (float("nan") if calls["n"] == 7 else 1.0)

    monkeypatch.setattr(sft_losses, "brevity_from_eos_logprobs", diverging)
    with pytest.raises(RunFailed) as failed:
        run(fast_spec(train={**train, "strategy": "fsdp"}), log=lambda *a: None)
    run_id = str(failed.value).split()[1]
    sharded = checkpoints.last(paths.checkpoint_dir(store_uri) / run_id)
    assert sharded is not None and sharded.is_dir() and checkpoints.step(sharded) == 4
    exported = load_file(export_run(run_id, tmp_path / "from_shards") / "model.safetensors")
    trained = checkpoints.model_state(sharded)
    assert all(torch.equal(exported[k], trained[k].cpu()) for k in exported)

    assert resume(run_id, log=lambda *a: None).status == "FINISHED"
    client = MlflowClient(store_uri)
    fsdp, reference = _losses(client, run_id), _losses(client, plain.run_id)
    assert [s for s, _ in fsdp] == list(range(1, 9))
    torch.testing.assert_close(
        torch.tensor([v for _, v in fsdp]),
        torch.tensor([v for _, v in reference]),
        rtol=1e-4,
        atol=0,
    )
    assert (
        load_file(export_run(run_id, tmp_path / "finished") / "model.safetensors").keys()
        == exported.keys()
    )
