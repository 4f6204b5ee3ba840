"""Everything that asks which process this is: ranks from flags or torchrun, the process
group, the device, and small collectives. Nothing else in vlp reads ranks directly.

Two ways to launch, as VLP's README and torchrun:
  - explicit ranks: one process per GPU started by hand, each with
    `--local_rank L --global_rank G --world_size W --dist_url tcp://HOST:PORT`;
  - torchrun: RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR in the environment (env://).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vlp.errors import VLPError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    init_method: str | None = None  # None: a single process, no process group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env_or_flags(local_rank: int = -1, global_rank: int = -1, world_size: int = 1,
                      dist_url: str | None = None, environ=os.environ) -> DistInfo:
    """Ranks from torchrun's environment when it is set, else from VLP's flags."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        world = int(environ["WORLD_SIZE"])
        return DistInfo(int(environ["RANK"]), int(environ.get("LOCAL_RANK", 0)), world,
                        "env://" if world > 1 else None)
    if world_size < 1:
        raise VLPError(f"--world_size must be at least 1, got {world_size}")
    if world_size == 1:
        return DistInfo(0, max(local_rank, 0), 1, None)
    if not 0 <= global_rank < world_size:
        raise VLPError(f"--global_rank {global_rank} must be in [0, --world_size {world_size}) "
                       "when ranks are given by hand (or launch with torchrun)")
    if not dist_url:
        raise VLPError("--dist_url is needed with --world_size > 1 (e.g. tcp://HOST:PORT)")
    if local_rank < 0:
        raise VLPError("--local_rank is needed with --world_size > 1 when ranks are given by "
                       "hand (the GPU index on its machine; or launch with torchrun)")
    return DistInfo(global_rank, max(local_rank, 0), world_size, dist_url)


def device_for(info: DistInfo, no_cuda: bool = False) -> torch.device:
    """This process's GPU: local rank L takes GPU L of those it sees, or GPU L mod the
    count where a scheduler shows each process fewer GPUs than there are local ranks
    (each process sees only its own under Slurm's --gpus-per-task 1)."""
    if torch.cuda.is_available() and not no_cuda:
        index = info.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init(info: DistInfo, device: torch.device, timeout_s: float, alone: bool = False) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU). A peer that dies makes the
    collectives of the others fail within `timeout_s` instead of hanging. `alone`: a
    single process gets a group of its own too (FSDP shards over a group, even of one)."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not info.distributed:
        if alone:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return
    if info.init_method and info.init_method.startswith("file://"):
        # VLP's default rendezvous is a file inside --output_dir, which may not exist yet;
        # without its folder every rank waits for the others until the timeout.
        os.makedirs(os.path.dirname(info.init_method[len("file://"):]) or ".", exist_ok=True)
    kwargs = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(backend, init_method=info.init_method, rank=info.rank,
                            world_size=info.world_size, timeout=timedelta(seconds=timeout_s),
                            **kwargs)


def shutdown(info: DistInfo | None = None, finished: bool = False) -> None:
    """Leave the process group. After a run every rank `finished`, rank 0 also removes a
    file:// rendezvous file: PyTorch needs a fresh one each time, and VLP's default (a
    file in --output_dir) would otherwise make the next run in that directory hang."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
    if finished and info is not None and info.is_main and info.init_method \
            and info.init_method.startswith("file://"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(info.init_method[len("file://"):])


def mesh(info: DistInfo, device: torch.device):
    """All ranks as one device mesh (what FSDP shards over)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (info.world_size,))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """`obj` of every rank, in rank order (a one-item list when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
