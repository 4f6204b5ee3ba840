"""Training-step speed of UnifiedVLP next to transformers' BertModel, in one run.

One step = forward, backward and AdamW update on a batch in VLP's layout
([CLS] regions [SEP] text [SEP]), seq2seq masks, masked LM on max_pred tokens. The
reference is BertModel with the same sizes, fed `inputs_embeds` and the same 4-D mask,
with the same tied output layer on the same positions. MFU divides each model's matmul
FLOPs per second by a float matmul's measured in this run; "GEMMs alone" is the MFU
that the step's matrix products would reach with nothing else to do (gemm_seconds), the
ceiling for any implementation at these shapes. Target: >= 1.0x BertModel.

The default batch of 32 is half VLP's 64 per GPU; at 64 the CPU figures are the same.

    python bench/train_step.py [--batch 32 --regions 36 --text 26] [--device cuda --bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from vlp.model import UnifiedVLP, VLPConfig, build_layout
from vlp.model.unified import step_flops
from vlp.train.optim import adamw

SIZES = {"MiniLM L6 H384": (6, 384, 12, 1536), "BERT-base L12 H768": (12, 768, 12, 3072)}


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of an n x n matmul, the practical ceiling for these models."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps = 0
    _sync(device)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def gemm_seconds(cfg: VLPConfig, b: int, r: int, t: int, device: str, dtype: torch.dtype,
                 reps: int = 5) -> float:
    """Seconds that the step's matrix products alone take at the step's own shapes (each
    linear layer's forward, input-gradient and weight-gradient products; attention's
    batched products three times), the FLOPs that step_flops counts. Small and skinny
    products run below the square-matmul peak, so this bounds what any implementation
    of the model reaches."""
    h, i, v, heads = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_attention_heads
    n, m = b * (r + 2 + t), b * r
    linears = [(n, h, 3 * h, cfg.num_hidden_layers), (n, h, h, cfg.num_hidden_layers),
               (n, h, i, cfg.num_hidden_layers), (n, i, h, cfg.num_hidden_layers),
               (m, cfg.region_feature_dim, cfg.region_hidden_size, 1),
               (m, cfg.region_hidden_size, h, 1), (m, cfg.region_loc_dim, h, 1),
               (b * cfg.max_pred, h, h, 1), (b * cfg.max_pred, h, v, 1)]

    def best(a, w):
        a @ w
        _sync(device)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ w
            _sync(device)
            times.append(time.perf_counter() - start)
        return min(times)

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    total = 0.0
    for rows, k, out, count in linears:
        x, w, g = rand(rows, k), rand(k, out), rand(rows, out)
        total += count * (best(x, w) + best(g, w.t()) + best(x.t(), g))
    length, head_dim = r + 2 + t, h // heads
    q, k = rand(b * heads, length, head_dim), rand(b * heads, head_dim, length)
    probs, values = rand(b * heads, length, length), rand(b * heads, length, head_dim)
    return total + cfg.num_hidden_layers * 3 * (best(q, k) + best(probs, values))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def make_batch(cfg: VLPConfig, b: int, r: int, t: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = dict(text_ids=torch.randint(200, cfg.vocab_size, (b, t), generator=g),
                 text_lengths=torch.full((b,), t), num_regions=torch.full((b,), r),
                 region_features=torch.randn(b, r, cfg.region_feature_dim, generator=g),
                 region_locations=torch.rand(b, r, cfg.region_loc_dim, generator=g))
    return {k: v.to(device) for k, v in batch.items()}


def time_steps(step, device: str, seconds: float) -> float:
    """Seconds per step after two warm-up steps."""
    for _ in range(2):
        step()
    _sync(device)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        step()
        n += 1
    _sync(device)
    return (time.perf_counter() - start) / n


def ours_step(cfg, batch, device, autocast):
    model = UnifiedVLP(cfg).to(device).train()
    opt = adamw(model, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        with autocast():
            loss = model.pretraining_loss(**batch, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, model


def reference_step(cfg, batch, device, autocast):
    """BertModel fed `inputs_embeds` (the same region MLPs and word lookups in plain
    PyTorch in front, so both models do the same work) and the same 4-D mask."""
    bert = BertModel(BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, type_vocab_size=6,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings),
        add_pooling_layer=False).to(device).train()
    h, d, p = cfg.hidden_size, cfg.region_feature_dim, cfg.hidden_dropout_prob
    feature = torch.nn.Sequential(torch.nn.Linear(d, cfg.region_hidden_size), torch.nn.ReLU(),
                                  torch.nn.Linear(cfg.region_hidden_size, h), torch.nn.ReLU(),
                                  torch.nn.Dropout(p)).to(device)
    location = torch.nn.Sequential(torch.nn.Linear(cfg.region_loc_dim, h), torch.nn.ReLU(),
                                   torch.nn.Dropout(p)).to(device)
    opt = adamw(torch.nn.ModuleList([bert, feature, location]), lr=1e-4, weight_decay=0.01)
    b, r = batch["region_features"].shape[:2]
    t = batch["text_ids"].shape[1]
    s2s = torch.ones(b, dtype=torch.bool, device=device)
    mask = build_layout(batch["num_regions"], batch["text_lengths"], r, t, s2s, cfg).mask
    types = torch.tensor([4] * (r + 2) + [5] * t, device=device).expand(b, -1)
    where = torch.arange(cfg.max_pred, device=device).add(r + 2).expand(b, -1)
    labels = batch["text_ids"][:, :cfg.max_pred]
    words = bert.embeddings.word_embeddings
    ends = torch.tensor([cfg.cls_token_id, cfg.sep_token_id], device=device).expand(b, -1)

    def step():
        with autocast():
            regions = feature(batch["region_features"]) + location(batch["region_locations"])
            ids = torch.cat([ends, batch["text_ids"]], 1)
            embeds = torch.cat([words(ids[:, :1]), regions, words(ids[:, 1:])], 1)
            hidden = bert(inputs_embeds=embeds, token_type_ids=types,
                          attention_mask=mask).last_hidden_state
            picked = hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))
            loss = F.cross_entropy(F.linear(picked, words.weight).flatten(0, 1).float(),
                                   labels.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--regions", type=int, default=36)
    ap.add_argument("--text", type=int, default=26, help="text slots (words + final [SEP])")
    ap.add_argument("--seconds", type=float, default=8.0, help="timing per model and size")
    ap.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    autocast = (lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)) \
        if args.bf16 else contextlib.nullcontext
    # The best of a few short measurements, as for the models: noise only slows things.
    peak = max(matmul_peak(args.device, dtype, seconds=0.5) for _ in range(args.rounds))
    seq = args.regions + 2 + args.text
    print(f"device {args.device}, {torch.get_num_threads()} threads, {dtype}; batch {args.batch}, "
          f"sequence {seq} ({args.regions} regions + {args.text} text + 2)")
    rows = []
    for name, (layers, hidden, heads, ff) in SIZES.items():
        cfg = VLPConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                        intermediate_size=ff, max_regions=args.regions)
        torch.manual_seed(0)
        batch = make_batch(cfg, args.batch, args.regions, args.text, args.device)
        ours_fn, _ = ours_step(cfg, batch, args.device, autocast)
        bert_fn = reference_step(cfg, batch, args.device, autocast)
        # Alternate short rounds and keep each one's best: other load on the machine
        # then hits both models alike.
        ours, bert = float("inf"), float("inf")
        for _ in range(args.rounds):
            ours = min(ours, time_steps(ours_fn, args.device, args.seconds / args.rounds))
            bert = min(bert, time_steps(bert_fn, args.device, args.seconds / args.rounds))
            # The peak too, between the models: a busy spell at the start would otherwise
            # lower it and flatter every MFU.
            peak = max(peak, matmul_peak(args.device, dtype, seconds=0.5))
        flops = step_flops(cfg, args.batch, seq, regions=args.regions)
        gemms = gemm_seconds(cfg, args.batch, args.regions, args.text, args.device, dtype)
        rows.append((name, ours, bert, flops, gemms))
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s (best of {args.rounds * (len(SIZES) + 1)} "
          "measurements through the run)")
    print(f"{'size':<20} {'UnifiedVLP':>12} {'BertModel':>12} {'ratio':>6} {'MFU ours':>9} "
          f"{'MFU bert':>9} {'GEMMs alone':>12}")
    for name, ours, bert, flops, gemms in rows:
        print(f"{name:<20} {args.batch / ours:>9.1f}/s {args.batch / bert:>9.1f}/s "
              f"{bert / ours:>5.2f}x {flops / ours / peak:>9.2f} {flops / bert / peak:>9.2f} "
              f"{flops / gemms / peak:>12.2f}")


if __name__ == "__main__":
    main()
