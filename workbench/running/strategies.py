"""Training strategies by name: what ``train.strategy`` builds for Lightning's Trainer.

A table, not a chain of ifs: each entry says whether the strategy needs CUDA devices and
whether it shards the weights, and how its Lightning object is built. Every multi-process
strategy gets ``train.dist_timeout_s`` as its process-group timeout, so a rank whose peer
vanished (a node powered off, a network cut) fails within that bound instead of Lightning's
default half hour; a peer that merely crashed closes its sockets and is noticed at once.
Names not in the table (``ddp_spawn``, ``deepspeed``, ...) go to Lightning unchanged.

Nothing here imports torch or Lightning at module level: preflight reads the table to
refuse a strategy this machine cannot run before any heavy import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial


@dataclass(frozen=True)
class StrategyInfo:
    """What a strategy name stands for."""

    summary: str
    build: Callable  # (train spec, model) -> a Lightning strategy object or name
    needs_cuda: bool = False  # torch's FSDP refuses CPU devices; Lightning refuses them earlier
    shards_weights: bool = False  # no rank holds the whole model between collectives


def _timeout(train):
    from datetime import timedelta

    return timedelta(seconds=train.dist_timeout_s)


def _ddp(train, model):
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(timeout=_timeout(train))


def _auto(train, model):
    # A single process: Lightning's choice. Several (devices, nodes, or a launcher that
    # started them): DDP, as Lightning would pick, but with the run's timeout.
    return _ddp(train, model) if _is_distributed(train) else "auto"


def _fsdp(train, model, cpu_offload: bool = False):
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        timeout=_timeout(train),
        cpu_offload=cpu_offload,
        # Shards on disk: every rank writes its own part, none gathers the whole model.
        state_dict_type="sharded",
        auto_wrap_policy=_layer_classes(model) or None,
    )


STRATEGIES: dict[str, StrategyInfo] = {
    "auto": StrategyInfo("one process, or DDP when there are several", _auto),
    "ddp": StrategyInfo("data parallel: every process holds the whole model", _ddp),
    "fsdp": StrategyInfo(
        "fully sharded data parallel: weights, gradients and optimizer state split across GPUs",
        _fsdp,
        needs_cuda=True,
        shards_weights=True,
    ),
    "fsdp_cpu_offload": StrategyInfo(
        "FSDP with the shards kept in CPU memory between uses",
        partial(_fsdp, cpu_offload=True),
        needs_cuda=True,
        shards_weights=True,
    ),
}


def info(name: str) -> StrategyInfo | None:
    return STRATEGIES.get(name)


def shards_weights(name: str) -> bool:
    entry = STRATEGIES.get(name)
    return entry is not None and entry.shards_weights


def lightning_strategy(train, model):
    """The ``strategy=`` argument of the Trainer for ``train`` (a TrainSpec)."""
    entry = STRATEGIES.get(train.strategy)
    return entry.build(train, model) if entry is not None else train.strategy


def _is_distributed(train) -> bool:
    from workbench.running import cluster

    devices = train.devices if isinstance(train.devices, int) else 1
    return devices * train.num_nodes > 1 or cluster.launched_world_size() > 1


def _layer_classes(model) -> set[type]:
    """The model's transformer block classes (transformers names them ``_no_split_modules``):
    one FSDP unit per block, so only one block's full weights exist at a time."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(module) for module in model.modules() if type(module).__name__ in names}


def gather_full_state(trainer) -> dict | None:
    """The LightningModule's whole state dict on rank 0 (on the CPU), None on other ranks.

    Collective under a sharding strategy: every rank must call it at the same point.
    """
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(trainer.strategy.model, StateDictType.FULL_STATE_DICT, config):
        state = trainer.strategy.model.state_dict()
    return state if trainer.is_global_zero else None
