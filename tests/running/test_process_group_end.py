"""A run destroys the process group started during it (cluster.process_group_ended), so
that no Gloo thread outlives the run into the interpreter's finalization; a group started
before the run is left to its owner."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from workbench.running import cluster


def start_group(tmp_path) -> None:
    # A one-process Gloo group over a file store: what Lightning starts for each rank.
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )


def test_a_group_started_during_the_run_is_destroyed_at_its_end(tmp_path):
    assert not dist.is_initialized()
    with cluster.process_group_ended():
        start_group(tmp_path)
        assert dist.is_initialized()
    assert not dist.is_initialized()


def test_a_group_started_before_the_run_is_left_up(tmp_path):
    start_group(tmp_path)
    try:
        with cluster.process_group_ended():
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_the_group_is_destroyed_when_the_run_fails_too(tmp_path):
    with pytest.raises(RuntimeError, match="the run failed"), cluster.process_group_ended():
        start_group(tmp_path)
        raise RuntimeError("the run failed")
    assert not dist.is_initialized()
