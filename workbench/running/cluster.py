"""Which process of a multi-process run this is, as Lightning's cluster environments say.

A run started by torchrun (on one node or several) or by SLURM's srun has its ranks in
the environment; Lightning's cluster environments read them, and so do we, through the
same classes in the same order, so the workbench and the Trainer always agree on which
process is rank 0 (the only one that creates, records and ends the MLflow run).

A spec with ``train.num_nodes > 1`` started by hand outside such a launcher cannot start
its other nodes itself: :func:`torchrun_commands` gives the command for each node instead.
"""

from __future__ import annotations

import contextlib
import os
import shlex

from workbench.spec.errors import SpecError


def environment():
    """The Lightning cluster environment that launched this process, None when none did.

    The same environments in the same order as Lightning's Trainer checks them
    (torchrun's first: it can run inside a SLURM allocation).
    """
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    for kind in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if kind.detect():
            return kind()
    return None


@contextlib.contextmanager
def process_group_ended():
    """Destroy the process group a run's Trainer started, when the run ends.

    Lightning starts torch's process group for a multi-process run and leaves it up. A
    process that then exits with the group alive leaves Gloo's worker threads to be torn
    down during the interpreter's finalization, which can abort the process (SIGABRT,
    "terminate called without an active exception") after its run has finished, so that
    torchrun reports the node failed and the other node waits out its exit barrier. A group
    the caller started before the run is left alone.
    """
    import torch.distributed as dist

    started_before = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not started_before and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launched_world_size() -> int:
    """Processes the launcher started for this run (1 when no launcher did)."""
    env = environment()
    return env.world_size() if env is not None else 1


def global_rank(train) -> int:
    """This process's global rank (0 when alone).

    Under a launcher, its environment's rank. Otherwise Lightning's own launcher may have
    started this process as local rank ``LOCAL_RANK`` of node ``NODE_RANK``.
    """
    env = environment()
    if env is not None:
        return env.global_rank()
    local = int(os.environ.get("LOCAL_RANK", 0))
    node = int(os.environ.get("NODE_RANK", 0))
    return node * (train.devices if isinstance(train.devices, int) else 1) + local


def check_layout(train) -> None:
    """Raise :class:`SpecError` if the launcher started another layout than the spec's
    ``devices`` x ``num_nodes`` (Lightning's own check, as one line with the fix), or none
    started a multi-node spec (its other nodes would never join)."""
    if needs_external_launch(train):
        raise SpecError(
            f"invalid run spec:\n  train.num_nodes = {train.num_nodes}: "
            "a run across nodes is started on every node by torchrun or srun; "
            "`workbench run SPEC` prints the commands (docs/scaling.md)"
        )
    env = environment()
    if env is None or not isinstance(train.devices, int):
        return
    try:
        env.validate_settings(num_devices=train.devices, num_nodes=train.num_nodes)
    except ValueError as err:
        raise SpecError(
            f"invalid run spec:\n  train.devices = {train.devices}, "
            f"train.num_nodes = {train.num_nodes}: "
            f"the launcher ({type(env).__name__}) started another layout ({err}); give torchrun "
            "--nproc-per-node=train.devices and --nnodes=train.num_nodes (SLURM: --ntasks-per-node "
            "and --nodes)"
        ) from None


def needs_external_launch(train) -> bool:
    """True for a multi-node spec started by hand: its other nodes need a launcher."""
    return train.num_nodes > 1 and environment() is None and "NODE_RANK" not in os.environ


def torchrun_commands(train, workbench_args: list[str]) -> str:
    """What to run on each node to start ``workbench <workbench_args>`` as one run."""
    nproc = train.devices if isinstance(train.devices, int) else "auto"
    command = shlex.join(["torchrun", f"--nnodes={train.num_nodes}", f"--nproc-per-node={nproc}"])
    tail = shlex.join(["-m", "workbench.cli", *workbench_args])
    lines = [
        f"This run spans {train.num_nodes} nodes (train.num_nodes); start it on every node with",
        "torchrun (or with srun under SLURM: docs/scaling.md):",
        "",
    ]
    for node in range(train.num_nodes):
        lines.append(f"  # node {node}" + (" (its address is MASTER_ADDR)" if node == 0 else ""))
        lines.append(
            f"  {command} --node-rank={node} --master-addr=MASTER_ADDR "
            f"--master-port=MASTER_PORT {tail}"
        )
    lines += [
        "",
        "MASTER_ADDR: an address of node 0 the others can reach; MASTER_PORT: a free port there.",
        "Every node needs this workbench, the spec's model and data, and the same MLflow store",
        "(a tracking server, e.g. `workbench board`); rank 0 alone records the run.",
    ]
    return "\n".join(lines)
