"""AdamW with BERT's no-decay groups and VLP's learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

# Biases and LayerNorm parameters get no weight decay (BERT, VLP).
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 head: str | None = None, head_lr: float | None = None) -> list[dict]:
    """Decay / no-decay groups at `lr`; parameters whose name contains `head` form their
    own pair of groups at `head_lr` when one is given."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            in_head = head_lr is not None and head is not None and head in name
            groups.setdefault((in_head, any(n in name for n in NO_DECAY)), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
             "lr": head_lr if in_head else lr}
            for (in_head, no_decay), params in sorted(groups.items())]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, head: str | None = None,
          head_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW (eps 1e-6 as BertAdam; with the bias correction BertAdam lacked); `head`
    names the parameters trained at `head_lr` (see param_groups).

    The fused kernel where this torch has one for the parameters' device (CPU since torch
    2.4, CUDA): the same update as the per-tensor loop, several times faster on the CPU."""
    groups = param_groups(model, weight_decay, lr, head, head_lr)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)


def lr_factor(step: int, total: int, warmup: float, mode: str = "warmup_linear") -> float:
    """VLP's schedules, as a factor of the peak learning rate at optimizer step `step`."""
    x = step / max(total, 1)
    if warmup > 0 and x < warmup:
        return x / warmup
    if mode == "warmup_constant":
        return 1.0
    if mode == "warmup_cosine":
        return 0.5 * (1.0 + math.cos(math.pi * x))
    return max((x - 1.0) / (warmup - 1.0), 0.0) if warmup < 1 else 0.0


def scheduler(optimizer, total_steps: int, warmup: float, mode: str) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, mode))
