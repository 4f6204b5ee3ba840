"""Attention forward + backward on the CPU: scaled_dot_product_attention next to the
encoder's explicit path (two batched products, the mask as an additive bias), without
dropout, in float32 and bfloat16, at the main job's shapes. The encoder trains on the
explicit path where it is the faster one: with dropout, and in bfloat16 or float16.

    python bench/attention.py [--heads 12 --head-dim 32]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vlp.model.encoder import attention_with_dropout, scores_bias

# (what, batch, sequence): the main job's VQA and pretraining batches, bench/train_step.py's.
SHAPES = (("VQA finetuning", 32, 23), ("pretraining", 64, 34), ("bench/train_step.py", 32, 64))


def seconds(fn, reps: int, rounds: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(f"{torch.get_num_threads()} threads; {args.heads} heads x {args.head_dim}; "
          "ms per layer, forward + backward")
    print(f"{'shape':<32}{'dtype':<10}{'SDPA':>8}{'explicit':>10}{'SDPA / explicit':>17}")
    for what, b, length in SHAPES:
        mask = torch.ones(b, 1, length, length, dtype=torch.bool)
        mask[:, :, :, length - 3:] = False  # padding keys
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (torch.randn(b, args.heads, length, args.head_dim, dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            bias = scores_bias(mask, b, args.heads, length, dtype)

            def sdpa():
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

            def explicit():
                attention_with_dropout(q, k, v, bias, 0.0).sum().backward()

            fused, ours = seconds(sdpa, args.reps), seconds(explicit, args.reps)
            print(f"{f'{what} ({b} x {length})':<32}{str(dtype)[6:]:<10}{fused * 1e3:>8.2f}"
                  f"{ours * 1e3:>10.2f}{fused / ours:>16.2f}x")


if __name__ == "__main__":
    main()
