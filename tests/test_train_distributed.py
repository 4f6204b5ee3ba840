"""Which process this is: ranks from torchrun's environment or VLP's flags, and its GPU."""

from __future__ import annotations

import pytest
import torch

from vlp.errors import VLPError
from vlp.train import distributed


def test_torchrun_environment_wins_over_the_flags():
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}
    info = distributed.from_env_or_flags(0, 0, 2, "tcp://h:1", environ=env)
    assert (info.rank, info.local_rank, info.world_size, info.init_method) == (3, 1, 4, "env://")
    assert not info.is_main and info.distributed


def test_explicit_ranks_need_each_flag_named():
    info = distributed.from_env_or_flags(1, 5, 8, "tcp://h:1", environ={})
    assert (info.rank, info.local_rank, info.init_method) == (5, 1, "tcp://h:1")
    with pytest.raises(VLPError, match=r"--global_rank 8 must be in \[0, --world_size 8\)"):
        distributed.from_env_or_flags(0, 8, 8, "tcp://h:1", environ={})
    with pytest.raises(VLPError, match="--dist_url is needed"):
        distributed.from_env_or_flags(0, 1, 2, None, environ={})
    # Without it every rank of a machine would take GPU 0.
    with pytest.raises(VLPError, match="--local_rank is needed"):
        distributed.from_env_or_flags(-1, 1, 2, "tcp://h:1", environ={})
    assert distributed.from_env_or_flags(-1, -1, 1, None, environ={}).local_rank == 0


@pytest.mark.parametrize("visible,local_rank,index", [(8, 3, 3), (1, 3, 0), (2, 3, 1)])
def test_each_local_rank_takes_a_gpu_it_can_see(monkeypatch, visible, local_rank, index):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    info = distributed.DistInfo(rank=local_rank, local_rank=local_rank, world_size=8)
    assert distributed.device_for(info) == torch.device("cuda", index) and chosen == [index]
    assert distributed.device_for(info, no_cuda=True) == torch.device("cpu")
