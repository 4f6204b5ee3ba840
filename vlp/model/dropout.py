"""Dropout whose CPU mask is drawn from 16 random bits per element.

torch's CPU dropout draws one Bernoulli number per element, which took a quarter of a
MiniLM-size training forward here (`bench/train_step.py`). Comparing 16-bit slices of
64-bit random words with a threshold gives the same mask distribution with the rate
resolved to 1/65536 (0.1 becomes 0.1000061), several times faster. Other devices keep
torch's dropout, whose fused kernels are already cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A CPU bool mask, each element False with probability q = round(p * 65536) / 65536,
    and the scale 1 / (1 - q) that keeps the expectation."""
    n = math.prod(shape)
    # Four int16 slices per draw; from the int64 minimum with no upper bound, random_
    # takes all 64 bits of each draw (no modulo).
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None,
                                                                  generator=generator)
    cut = round(p * LEVELS)
    keep = words.view(torch.int16)[:n].view(shape) >= cut - LEVELS // 2
    return keep, LEVELS / (LEVELS - cut)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the cheaper mask on the CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p)
    if x.dtype in (torch.float16, torch.bfloat16):
        # A half-precision mask would round the scale itself (1.1094 for 1.1111): scale
        # each product in float and round that, as torch does.
        return torch.where(keep, x * scale, 0.0)
    # One multiply forward and one backward: autograd keeps only the scaled mask.
    return x * torch.where(keep, scale, 0.0).to(x.dtype)


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, no state) on `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
