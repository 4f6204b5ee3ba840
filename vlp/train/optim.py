"""AdamW with BERT's no-decay groups and VLP's learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

# Biases and LayerNorm parameters get no weight decay (BERT, VLP).
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(n in name for n in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # eps 1e-6 as BertAdam; bias correction on (BertAdam had none).
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999),
                             eps=1e-6)


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
