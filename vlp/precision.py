"""Mixed precision with torch.amp, where VLP used apex.

`--bf16`: autocast to bfloat16 (CPU or CUDA), no loss scaling.
`--fp16` (VLP's flag): autocast to float16 with a GradScaler, on CUDA. Weights and
optimizer state stay float32 (VLP's `--fp16` halved the weights and kept float32 master
copies in its optimizer). `--amp` only chose apex's amp for `--fp16` in VLP; alone, as in
VLP's README command lines, it trains in float32, with a notice.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import torch

from vlp.errors import VLPError

PRECISIONS = ("fp32", "bf16", "fp16")


def choose(bf16: bool, fp16: bool, device: torch.device) -> str:
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise VLPError(f"--bf16: {torch.cuda.get_device_name(device)} has no bfloat16; "
                           "use --fp16 (float16 with loss scaling) on this GPU")
        if device.type == "cpu" and (speedup := cpu_bf16_speedup()) < 1:
            warnings.warn(f"--bf16: bfloat16 matrix products run {speedup:.2f}x as fast as "
                          "float32 on this CPU (no AMX), so bfloat16 autocast slows training "
                          "down here; leave out --bf16 to train in float32", stacklevel=2)
        return "bf16"
    if fp16:
        if device.type != "cuda":
            warnings.warn("--fp16: float16 mixed precision needs CUDA; training in "
                          "float32 on the CPU (use --bf16 for CPU mixed precision)",
                          stacklevel=2)
            return "fp32"
        return "fp16"
    return "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device, loss_scale: float = 0.0):
    """A GradScaler for fp16 (VLP's --loss_scale > 0 sets its starting scale), else a
    disabled one, so the training step has one shape. Under --fsdp the gradients are
    DTensors, whose overflow check all-reduces its verdict, so every rank skips the same
    steps (FSDP1's ShardedGradScaler fails on them with the fused optimizers)."""
    enabled = precision == "fp16"
    kwargs = {"init_scale": loss_scale} if loss_scale > 0 else {}
    return torch.amp.GradScaler(device.type, enabled=enabled, **kwargs)


def cpu_bf16_speedup(rows: int = 2048, inner: int = 384, cols: int = 1536, reps: int = 5) -> float:
    """How many times faster a bfloat16 matrix product runs than a float32 one on this CPU,
    at a transformer layer's shape (best of `reps` each; about 0.2 s in all). Well above 1
    with AMX; below 1 on CPUs that only convert bfloat16 (AVX-512 without AMX), where
    `--bf16` slows training down."""
    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        a @ b
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)
    return best(torch.float32) / best(torch.bfloat16)
