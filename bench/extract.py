"""Images/s of the full region extractor against the bare detector forward.

Both run in this process on the same images and device: the bare forward is
`model(images)` (torchvision's own postprocessing) over images already decoded in
memory; the full extractor is `extract_regions` end to end (workers decoding files,
RPN + box head + bottom-up-attention selection, the background thread writing an LMDB
store). Prints both rates and their ratio (target >= 0.9).

    python bench/extract.py                       # ToyWorld-sized detector, ~1 minute
    python bench/extract.py --detector runs/toyworld/detector --images 512
    python bench/extract.py --device cuda --size 640 --backbone resnet50
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from feature_extraction import (DetectorConfig, ExtractSettings, RegionExtractor,  # noqa: E402
                                build_detector, extract_regions, from_directory,
                                load_detector, toyworld_config)
from feature_extraction.extract import default_workers  # noqa: E402

TARGET = 0.9


def write_images(directory: str, count: int, size: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for i in range(count):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 230, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.integers(0, size * 3 // 4, 2)
            side = int(rng.integers(size // 8, size // 4))
            draw.rectangle([int(x), int(y), int(x) + side, int(y) + side],
                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        img.save(os.path.join(directory, f"bench_{i:06d}.jpg"), quality=92)


def detector(args):
    if args.detector:
        model, _ = load_detector(args.detector)
        return model
    torch.manual_seed(0)
    if args.backbone == "resnet18":
        config = toyworld_config(["__background__"] + [f"c{i}" for i in range(18)], args.size)
    else:
        config = DetectorConfig(min_size=args.size, max_size=args.size)
    return build_detector(config).eval()


def bare_rate(model, images, batch: int, device) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            model([im.to(device) for im in images[i:i + batch]])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def full_rate(extractor, items, out: str, args) -> float:
    shutil.rmtree(out, ignore_errors=True)
    report = extract_regions(items, extractor, out, batch_size=args.batch_size,
                             workers=args.workers, progress=False)
    return report.images_per_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--detector", help="detector directory or .pth (default: random "
                                      "weights, ToyWorld's architecture)")
    p.add_argument("--backbone", choices=("resnet18", "resnet50"), default="resnet18",
                   help="for the random detector")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, help="decoding processes (default: 0 on the "
                                               "CPU, 4 with CUDA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2, help="alternating timed rounds")
    args = p.parse_args(argv)

    from feature_extraction.images import decode_rgb

    device = torch.device(args.device)
    model = detector(args).to(device)
    extractor = RegionExtractor(model, ExtractSettings(min_boxes=10, max_boxes=100))
    work = tempfile.mkdtemp(prefix="vlp-bench-extract-")
    try:
        image_dir = os.path.join(work, "images")
        os.mkdir(image_dir)
        write_images(image_dir, args.images, args.size)
        items = from_directory(image_dir)
        images = [torch.from_numpy(decode_rgb(it.path)).permute(2, 0, 1).float() / 255
                  for it in items]
        bare_rate(model, images[:args.batch_size], args.batch_size, device)  # warm up
        bare, full = [], []
        for r in range(args.rounds):
            bare.append(bare_rate(model, images, args.batch_size, device))
            full.append(full_rate(extractor, items, os.path.join(work, f"s{r}.lmdb"), args))
        b, f = max(bare), max(full)
        workers = default_workers(device) if args.workers is None else args.workers
        print(f"{args.images} images of {args.size}x{args.size} on {device}, batch "
              f"{args.batch_size}, {workers} workers, {torch.get_num_threads()} threads")
        print(f"  bare detector forward  {b:8.1f} images/s")
        print(f"  full extractor         {f:8.1f} images/s (decode, regions, store)")
        print(f"  ratio {f / b:.2f} (target >= {TARGET})")
        return 0 if f / b >= TARGET else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
