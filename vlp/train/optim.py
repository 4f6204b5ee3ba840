"""VLP's optimizer (BertAdam) or AdamW, on BERT's no-decay groups; VLP's schedules."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from vlp.train.bert_adam import BertAdam

OPTIMIZERS = ("bertadam", "adamw")

# Biases and LayerNorm parameters get no weight decay (BERT, VLP).
NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 head: str | tuple[str, ...] | None = None,
                 head_lr: float | None = None) -> list[dict]:
    """Decay / no-decay groups at `lr`; parameters whose name contains `head` (or one of
    several) form their own pair of groups at `head_lr` when one is given."""
    heads = (head,) if isinstance(head, str) else tuple(head or ())
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            in_head = head_lr is not None and any(h in name for h in heads)
            groups.setdefault((in_head, any(n in name for n in NO_DECAY)), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
             "lr": head_lr if in_head else lr}
            for (in_head, no_decay), params in sorted(groups.items())]


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, head: str | tuple[str, ...] | None = None,
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


def bert_adam(model: torch.nn.Module, lr: float, weight_decay: float, max_grad_norm: float,
              head: str | tuple[str, ...] | None = None, head_lr: float | None = None,
              fp16: bool = False) -> BertAdam:
    """VLP's optimizer: BertAdam (no bias correction, eps 1e-6 added to sqrt(v), decoupled
    weight decay, each gradient tensor clipped to `max_grad_norm`). `fp16` is VLP's
    --fp16, which trained with apex's FusedAdam instead: the same update with its eps
    1e-8, each parameter group's gradients clipped together. `head`, `head_lr` as in
    param_groups."""
    groups = param_groups(model, weight_decay, lr, head, head_lr)
    if fp16:
        return BertAdam(groups, lr, eps=1e-8, max_grad_norm=max_grad_norm, clip="group")
    return BertAdam(groups, lr, eps=1e-6, max_grad_norm=max_grad_norm, clip="tensor")


def build(kind: str, model: torch.nn.Module, lr: float, weight_decay: float,
          max_grad_norm: float, head: str | tuple[str, ...] | None = None, head_lr: float | None = None,
          fp16: bool = False) -> torch.optim.Optimizer:
    """`--optimizer` `kind`: "bertadam" clips inside the optimizer; with "adamw" the
    training loop clips the global norm at `max_grad_norm`."""
    if kind == "bertadam":
        return bert_adam(model, lr, weight_decay, max_grad_norm, head, head_lr, fp16)
    if kind == "adamw":
        return adamw(model, lr, weight_decay, head, head_lr)
    raise ValueError(f"optimizer {kind!r} is not one of {OPTIMIZERS}")


def kind_of(optimizer: torch.optim.Optimizer) -> str:
    """The --optimizer value that builds `optimizer`."""
    return "bertadam" if isinstance(optimizer, BertAdam) else "adamw"


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
