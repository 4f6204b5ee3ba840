"""ToyWorld generation speed: the whole generator next to its floor, in one run.

The floor is drawing and encoding the same scenes with nothing else (no captions,
questions, JSON or preview); the ratio says what the annotations cost. Target: 2,000
images (plus 2,000 pretraining images, as in the main job) in under a minute.

    python bench/toyworld.py [--images 2000] [--pretrain-images 2000]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

import numpy as np

from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.data.toyworld.scene import render, sample_scene


def floor(n: int, size: int) -> float:
    """Seconds to sample, draw and JPEG-encode n scenes in memory."""
    start = time.perf_counter()
    for i in range(n):
        rng = np.random.default_rng([0, 0, i])
        render(sample_scene(rng, size), rng, size).save(io.BytesIO(), "JPEG", quality=92)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--pretrain-images", type=int, default=2000)
    args = ap.parse_args()
    total = args.images + args.pretrain_images
    cfg = ToyWorldConfig(images=args.images, pretrain_images=args.pretrain_images)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(f"{tmp}/toyworld", cfg, progress=False)
        full = time.perf_counter() - start
    bare = floor(total, cfg.size)
    print(f"images                 {total} ({args.images} captioned, "
          f"{args.pretrain_images} pretraining), {cfg.size}px")
    print(f"generate (all files)   {full:7.2f} s  {total / full:8.1f} img/s")
    print(f"draw + encode only     {bare:7.2f} s  {total / bare:8.1f} img/s")
    print(f"ratio generate/floor   {bare / full:7.2f}  (1.0 = annotations cost nothing)")
    per_2000 = full * 2000 / total
    print(f"2,000 images in        {per_2000:7.2f} s  target < 60 s: "
          f"{'met' if per_2000 < 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
