"""Shared by the extraction and detector tests: a tiny detector and synthetic images."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from feature_extraction import DetectorConfig, build_detector, save_detector

COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 215)]


def tiny_config(num_classes: int = 4) -> DetectorConfig:
    return DetectorConfig(
        backbone="resnet18", num_classes=num_classes, representation_size=32,
        fpn_channels=16, returned_layers=[2, 3], anchor_sizes=[16, 32, 64],
        aspect_ratios=[1.0], min_size=64, max_size=96, norm="batch", roi_sampling_ratio=1,
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=32, box_batch_size_per_image=32)


def tiny_detector(seed: int = 0, num_classes: int = 4):
    torch.manual_seed(seed)
    config = tiny_config(num_classes)
    return build_detector(config).eval(), config


def saved_tiny_detector(directory: Path, seed: int = 0) -> Path:
    model, config = tiny_detector(seed)
    return save_detector(model, config, directory)


def scene(i: int, w: int = 64, h: int = 48) -> tuple[np.ndarray, list]:
    """A gray image with one or two colored squares; returns (pixels, COCO annotations)."""
    rng = np.random.default_rng(i)
    pixels = np.full((h, w, 3), 200, np.uint8)
    anns = []
    for k in range(1 + i % 2):
        side = int(rng.integers(12, 20))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        c = int(rng.integers(0, 3))
        pixels[y:y + side, x:x + side] = COLORS[c]
        anns.append({"bbox": [x, y, side, side], "category_id": c + 1})
    return pixels, anns


def write_images(directory: Path, count: int, suffix: str = ".png",
                 sizes=((64, 48),)) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = directory / f"img_{i:03d}{suffix}"
        Image.fromarray(scene(i, w, h)[0]).save(path)
        paths.append(path)
    return paths


def write_coco(path: Path, image_dir: Path, count: int, w: int = 64, h: int = 48) -> Path:
    """Images and a COCO instances file of `count` scenes."""
    import json

    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        pixels, anns = scene(i, w, h)
        name = f"scene_{i:03d}.png"
        Image.fromarray(pixels).save(image_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "bbox": a["bbox"], "category_id": a["category_id"],
                                "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(["red", "green", "blue"])]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path
