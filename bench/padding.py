"""A caption-finetuning step on ToyWorld-shaped batches, four ways, in one run: the encoder
on the padded batch or on its real positions alone (`Packed`), and the masked-LM head over
the whole vocabulary or over the training captions' tokens (`--output_vocab train`).

Batches are drawn like the main job's caption stage: 64 captions, each image 1-4 regions of
12 slots, captions of 5-21 tokens with its [SEP] (ToyWorld's mean 10.6), half masked
(`--mask_prob 0.5 --max_pred 10`), MiniLM's sizes (L6, H384, 30,522 tokens), 300 output
tokens kept. Rounds alternate the variants to share the machine's noise. Target: padding
skipped and the output vocabulary together >= 1.5x the padded whole-vocabulary step in
float32.

    python bench/padding.py [--rounds 3 --seconds 6 --bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.encoder import Encoder
from vlp.train.optim import adamw

KEPT = 300


def batches(cfg: VLPConfig, count: int = 8, size: int = 64) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        lengths = torch.randint(5, 22, (size,), generator=g)
        out.append(dict(
            text_ids=torch.randint(1000, 1000 + KEPT - 2, (size, int(lengths.max())), generator=g),
            text_lengths=lengths, num_regions=torch.randint(1, 5, (size,), generator=g),
            region_features=torch.randn(size, 12, cfg.region_feature_dim, generator=g),
            region_locations=torch.rand(size, 12, cfg.region_loc_dim, generator=g)))
    return out


def variant(cfg: VLPConfig, packed: bool, kept: bool, data: list[dict], autocast):
    torch.manual_seed(0)
    model = UnifiedVLP(cfg).train()
    if kept:
        model.restrict_output(sorted({0, 102} | set(range(1000, 1000 + KEPT - 2))))
    if not packed:  # the encoder as it runs without `valid`: the whole padded batch
        model.encoder.forward = lambda x, mask, cache=None, keep=None, valid=None: \
            Encoder.forward(model.encoder, x, mask, cache, keep)
    opt = adamw(model, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    state = {"i": 0}

    def step():
        batch = data[state["i"] % len(data)]
        state["i"] += 1
        with autocast():
            loss = model.pretraining_loss(**batch, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def seconds_per_step(step, seconds: float) -> float:
    for _ in range(2):
        step()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        step()
        n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0, help="timing per variant and round")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    args = ap.parse_args()
    cfg = VLPConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                    num_attention_heads=12, intermediate_size=1536, region_feature_dim=256,
                    region_classes=37, max_regions=12, max_pred=10, mask_prob=0.5,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    data = batches(cfg)
    real = sum(int((b["num_regions"] + b["text_lengths"] + 2).sum()) for b in data)
    padded = sum(len(b["text_lengths"]) * (12 + 2 + b["text_ids"].shape[1]) for b in data)

    def autocast():
        return (torch.autocast("cpu", torch.bfloat16) if args.bf16 else contextlib.nullcontext())

    names = {(False, False): "padded, whole vocabulary", (True, False): "packed, whole vocabulary",
             (False, True): "padded, kept tokens", (True, True): "packed, kept tokens"}
    steps = {k: variant(cfg, *k, data, autocast) for k in names}
    times = {k: [] for k in names}
    for _ in range(args.rounds):
        for k, step in steps.items():
            times[k].append(seconds_per_step(step, args.seconds))
    print(f"{torch.get_num_threads()} threads, {'bfloat16' if args.bf16 else 'float32'}; "
          f"batches {100 * real / padded:.0f}% real positions (12 region slots)")
    base = min(times[(False, False)])
    for k, name in names.items():
        best = min(times[k])
        print(f"{name:<28} {1000 * best:8.1f} ms/step   {base / best:5.2f}x")


if __name__ == "__main__":
    main()
