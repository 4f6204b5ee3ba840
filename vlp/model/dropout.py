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


def _bits(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n random int16 numbers: four slices per 64-bit draw. From the int64 minimum with no
    upper bound, random_ takes all 64 bits of each draw (no modulo)."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None,
                                                                  generator=generator)
    return words.view(torch.int16)[:n]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A CPU bool mask, each element False with probability q = round(p * 65536) / 65536,
    and the scale 1 / (1 - q) that keeps the expectation."""
    cut = round(p * LEVELS)
    keep = _bits(math.prod(shape), generator).view(shape) >= cut - LEVELS // 2
    return keep, LEVELS / (LEVELS - cut)


def keep_weights(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """keep_mask's draw as 1.0 / 0.0 in `dtype`, written by the comparison itself: one pass
    where a bool mask and a conversion take two. Same numbers from the same seed."""
    cut = round(p * LEVELS)
    weights = torch.empty(shape, dtype=dtype)
    torch.ge(_bits(math.prod(shape), generator).view(shape), cut - LEVELS // 2, out=weights)
    return weights, LEVELS / (LEVELS - cut)


def cpu_dropout(x: torch.Tensor, p: float) -> bool:
    """Whether `dropout` draws its own mask for x (training, 0 < p < 1, on the CPU)."""
    return x.device.type == "cpu" and 0.0 < p < 1.0


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the cheaper mask on the CPU."""
    if not training or p == 0.0:
        return x
    if not cpu_dropout(x, p):
        return F.dropout(x, p, training)
    if x.dtype in (torch.float16, torch.bfloat16):
        # A half-precision mask would round the scale itself (1.1094 for 1.1111): scale
        # each product in float and round that, as torch does.
        keep, scale = keep_mask(x.shape, p)
        return torch.where(keep, x * scale, 0.0)
    # One multiply forward and one backward: autograd keeps only the scaled mask.
    weights, scale = keep_weights(x.shape, p, x.dtype)
    return x * weights.mul_(scale)


def dropout_add(x: torch.Tensor, residual: torch.Tensor, p: float,
                training: bool = True) -> torch.Tensor:
    """dropout(x, p, training) + residual; on the CPU in float32 one addcmul, the mask and
    its scale applied in the same pass as the sum."""
    if training and x.dtype == torch.float32 and cpu_dropout(x, p):
        weights, scale = keep_weights(x.shape, p, x.dtype)
        return torch.addcmul(residual, x, weights, value=scale)
    return dropout(x, p, training) + residual


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, no state) on `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
