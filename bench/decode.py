"""Caption decoding speed with the key/value cache next to full recomputation, in one run.

Greedy and beam search at max length 20 on a MiniLM-size model (L6 H384) with 36 regions
per image; captions/s for each, the cache's speed-up (target >= 4x at beam 5), and the
time of each step along the sequence with the cache (it should stay flat: a step adds
two positions whatever the length).

    python bench/decode.py [--images 16 --beam 5 --length 20 --device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from vlp.decode import CaptionGenerator, SearchSettings
from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.decoding import CachedSteps

EOS = 102


def model_and_inputs(images: int, regions: int, device: str):
    torch.manual_seed(0)
    cfg = VLPConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, region_feature_dim=1024, region_hidden_size=1024,
                    region_classes=19, max_regions=regions)
    model = UnifiedVLP(cfg).to(device).eval()
    feats = torch.randn(images, regions, 1024, device=device)
    locs = torch.randn(images, regions, cfg.region_loc_dim, device=device)
    n = torch.full((images,), regions, device=device)
    return model, (feats, locs, n)


def captions_per_s(model, inputs, settings, use_cache: bool, repeats: int = 2) -> float:
    gen = CaptionGenerator(model, settings, use_cache)
    gen.generate(*inputs)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        gen.generate(*inputs)
    return repeats * inputs[0].shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def step_times(model, inputs, length: int) -> list[float]:
    steps = CachedSteps(model, *inputs, max_length=length)
    prev, times = None, []
    for _ in range(length):
        start = time.perf_counter()
        prev = steps.step(prev).argmax(-1)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    model, inputs = model_and_inputs(a.images, a.regions, a.device)
    # A random model rarely emits the end token: every caption runs the full length.
    print(f"L6 H384, {a.images} images x {a.regions} regions, max length {a.length}, "
          f"{a.device}, torch threads {torch.get_num_threads()}")
    for name, beam in (("greedy", 1), (f"beam {a.beam}", a.beam)):
        s = SearchSettings(eos_id=EOS, max_length=a.length, beam_size=beam)
        cached = captions_per_s(model, inputs, s, True)
        full = captions_per_s(model, inputs, s, False, repeats=1)
        print(f"  {name:8s} cache {cached:7.1f} captions/s   recompute {full:7.1f} captions/s   "
              f"speed-up {cached / full:5.2f}x")
    times = step_times(model, inputs, a.length)
    quarter = max(a.length // 4, 1)
    early, late = sum(times[1:1 + quarter]) / quarter, sum(times[-quarter:]) / quarter
    print(f"  cached step time: steps 2-{1 + quarter} {1e3 * early:.1f} ms, last {quarter} "
          f"{1e3 * late:.1f} ms (late / early {late / early:.2f})")


if __name__ == "__main__":
    main()
