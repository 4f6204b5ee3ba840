"""`vlp train --fsdp`: parameters, gradients and optimizer state sharded across ranks with
PyTorch's fully_shard (FSDP2), and checkpoints through torch.distributed.checkpoint.

Each encoder layer is one FSDP unit, gathered just before it runs and freed after; the
rest (embeddings, region layers, heads: the task's own forward) is the root unit. With
--bf16 or --fp16 the gathered weights are cast to that type for the computation and the
gradients reduced in float32 (MixedPrecisionPolicy); the sharded weights and the
optimizer state stay float32, as without FSDP.

A checkpoint's weights and optimizer state are written by every rank into
`<checkpoint>/dcp/` (vlp.model.dcp reads them safely); the rest of the checkpoint is the
usual one. `vlp convert-checkpoint --from dcp` gathers the weights into
config.json + model.safetensors; `from_pretrained` also reads the shards directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlp.model import dcp


def shard(task: nn.Module, precision: str, mesh) -> nn.Module:
    """`task` (a module whose `model` is the UnifiedVLP) sharded over `mesh` in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)
    for layer in task.model.encoder.layer:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(task, mesh=mesh, mp_policy=policy)
    return task


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def set_gradient_sync(module: nn.Module, sync: bool) -> None:
    """Whether this backward reduce-scatters gradients (False inside an accumulation)."""
    module.set_requires_gradient_sync(sync)


def _state(task: nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optim = get_state_dict(task.model, optimizer)
    return {"model": model, "optimizer": optim}


def save(directory: Path, task: nn.Module, optimizer) -> None:
    """Write this rank's shards into `directory`/dcp (a collective: every rank calls it)."""
    import torch.distributed.checkpoint as tdc

    tdc.save(_state(task, optimizer), storage_writer=tdc.FileSystemWriter(
        str(Path(directory) / dcp.DCP_DIR)))


def load(directory: Path, task: nn.Module, optimizer) -> None:
    """Weights and optimizer state from checkpoint `directory` (a collective)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(task, optimizer)
    dcp.load(state, directory)
    set_state_dict(task.model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])


def full_norm(norm) -> float:
    """A gradient norm as a number, whether a plain tensor or a DTensor."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
