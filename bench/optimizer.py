"""The optimizer steps the trainer takes, on the same parameters and gradients, in one run:
`--optimizer adamw` (`vlp.train.optim.adamw`, torch's fused kernel) next to torch's
per-tensor AdamW loop, and `--optimizer bertadam` (VLP's BertAdam, its per-tensor gradient
clipping included: torch's fused kernel for the update, and the foreach ops it falls back
to where there is none) next to the fused AdamW.

The model is UnifiedVLP at MiniLM's sizes with VLP's 1601 region classes and a
3129-answer head; its 12 M word-embedding parameters get a dense gradient every step.
Rounds alternate to share the machine's noise. Targets: the fused AdamW >= 2x faster than
the loop on the CPU; BertAdam within 3x of the fused AdamW (clipping and the decay make
three more passes over memory).

    python bench/optimizer.py [--steps 20 --rounds 3 --device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from vlp.model import UnifiedVLP, VLPConfig
from vlp.train import optim


def minilm(device: str) -> UnifiedVLP:
    config = VLPConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                       num_attention_heads=12, intermediate_size=1536,
                       region_feature_dim=1024, region_classes=1601, vqa_answers=3129)
    model = UnifiedVLP(config).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return model


def seconds_per_step(opt: torch.optim.Optimizer, steps: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    opt.step()  # allocates the moments
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = minilm(args.device)
    params = sum(p.numel() for p in model.parameters())
    trainer = optim.adamw(model, lr=1e-4, weight_decay=0.01, head="vqa_head.", head_lr=1e-3)
    loop = torch.optim.AdamW(optim.param_groups(model, 0.01, 1e-4, "vqa_head.", 1e-3),
                             lr=1e-4, eps=1e-6, foreach=False)
    bert_adam = optim.bert_adam(model, lr=1e-4, weight_decay=0.01, max_grad_norm=1.0,
                                head="vqa_head.", head_lr=1e-3)
    bert_foreach = optim.bert_adam(model, lr=1e-4, weight_decay=0.01, max_grad_norm=1.0,
                                   head="vqa_head.", head_lr=1e-3)
    bert_foreach.fused = False
    fused = bool(trainer.defaults.get("fused"))
    runs = {"trainer": trainer, "loop": loop, "bertadam": bert_adam, "foreach": bert_foreach}
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, opt in runs.items():
            timings[name].append(seconds_per_step(opt, args.steps, args.device))
    best = {k: min(v) for k, v in timings.items()}
    print(f"optimizer step over {params / 1e6:.1f} M parameters on {args.device} "
          f"({args.rounds} rounds x {args.steps} steps, best round)")
    kernel = "foreach ops" if bert_adam.fused is False else "fused kernel"
    for label, name in ((f"AdamW ({'fused' if fused else 'per-tensor'})", "trainer"),
                        ("AdamW per-tensor loop", "loop"), (f"BertAdam ({kernel})", "bertadam"),
                        ("BertAdam (foreach ops)", "foreach")):
        print(f"  {label + ':':<26}{1e3 * best[name]:7.1f} ms")
    print(f"  fused AdamW vs loop: {best['loop'] / best['trainer']:.2f}x faster "
          "(target >= 2x on the CPU)")
    print(f"  BertAdam vs fused AdamW: {best['bertadam'] / best['trainer']:.2f}x the time "
          "(target <= 3x)")


if __name__ == "__main__":
    main()
