"""The detector and region features of the main job, on ToyWorld.

ToyWorld's shapes are 20-40 px on 128 px images, so a small detector does: ResNet-18,
a 64-channel FPN on strides 4-16 (+ pool), square anchors, input at the image size,
a 256-d box head. Extraction keeps one region per shape (1 to 12 per image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from feature_extraction.config import toyworld_config
from feature_extraction.evaluate import category_labels
from feature_extraction.extract import extract_regions
from feature_extraction.images import from_directory
from feature_extraction.regions import ExtractSettings, RegionExtractor
from feature_extraction.train import TrainOptions, train_detector

# ToyWorld shapes never overlap and an image holds 1 to 4 of them: one region per object
# (no fillers, and the NMS across classes drops a shape's second-guess classes and the
# boxes that cover part of a shape; two drawn shapes' boxes never overlap, so it cannot
# merge them), so a count question counts regions and a colour question finds one region
# to read.
TOY_SETTINGS = ExtractSettings(conf=0.2, nms_iou=0.3, min_boxes=1, max_boxes=12,
                               agnostic_nms=0.2)
# (steps, batch size): full mode is sized for ~5 minutes on 2 CPU cores. At 150 steps
# (and an agnostic IoU of 0.5) 34 of the 200 test scenes had a region too many and 17 of
# their 525 shapes the wrong class, which capped VQA accuracy near 91%.
FULL_SCHEDULE = (300, 16)
TINY_SCHEDULE = (6, 4)


def _image_size(coco_json: Path) -> int:
    images = json.loads(coco_json.read_text())["images"]
    return max(max(im["width"], im["height"]) for im in images)


def train_toyworld_detector(toyworld_dir: Path, out_dir: Path, tiny: bool,
                            schedule: tuple[int, int] | None = None) -> dict:
    """Train the ToyWorld detector into `out_dir` (or reuse a finished one there), for
    `schedule` (steps, batch) or the full or tiny one.

    Returns {"checkpoint", "map50", "recall50", "map", "seconds", ...}; the metrics are
    on ToyWorld's val split (instances_val.json).
    """
    toyworld_dir, out_dir = Path(toyworld_dir), Path(out_dir)
    ann = toyworld_dir / "annotations"
    train_json, val_json = ann / "instances_train.json", ann / "instances_val.json"
    _, names = category_labels(train_json)
    config = toyworld_config(["__background__"] + names, _image_size(train_json))
    steps, batch = schedule or (TINY_SCHEDULE if tiny else FULL_SCHEDULE)
    opts = TrainOptions(
        coco=str(train_json), images=str(toyworld_dir / "images"), out=str(out_dir),
        val_coco=str(val_json), config=config, max_steps=steps, batch_size=batch,
        lr=2e-3, warmup_steps=min(50, steps), workers=0, save_every=50,
        progress=not tiny, extra={"tiny": tiny})
    return train_detector(opts)


def extract_toyworld(toyworld_dir: Path, detector_dir: Path, store_path: Path,
                     tiny: bool) -> dict:
    """Regions of every image in toyworld_dir/images (toy_* and cc_*) into an LMDB store
    keyed by file stem; resumes a partial store. Returns what the store holds."""
    from feature_extraction.detector import load_detector
    from vlp.data.features import open_store
    from vlp.errors import VLPError

    start = time.perf_counter()
    model, config = load_detector(detector_dir)
    items = from_directory(Path(toyworld_dir) / "images")
    report = extract_regions(items, RegionExtractor(model, TOY_SETTINGS), store_path,
                             format="lmdb", batch_size=16, progress=not tiny)
    if not report.ok:
        raise VLPError(f"no ToyWorld image could be extracted; see {report.errors_file}")
    scenes = json.loads((Path(toyworld_dir) / "annotations" / "scenes_toy.json").read_text())
    with open_store(store_path) as store:
        counts = [store[k].num_regions for k in store]
        feature_dim, num_classes = store.feature_dim, store.num_classes
        matched = scenes_matched(scenes, store, config.class_names)
    return {"store": str(store_path), "images": len(counts), "scenes_matched": matched,
            "mean_boxes": float(np.mean(counts)) if counts else 0.0,
            "feature_dim": int(feature_dim), "num_classes": int(num_classes),
            "failed": sum(report.failed.values()),
            "images_per_s": round(report.images_per_s, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def region_categories(record, class_names: list[str]) -> list[str]:
    """Each region's most likely foreground class ("small red circle")."""
    labels = record.cls_probs[:, 1:].astype(np.float32).argmax(axis=1) + 1
    return [class_names[k] for k in labels.tolist()]


def scenes_matched(scenes: list[dict], store, class_names: list[str],
                   min_iou: float = 0.5) -> float:
    """Fraction of the drawn scenes whose regions are exactly their shapes: as many regions
    as shapes, and each shape covered (IoU >= min_iou) by its own region whose most likely
    class is the shape's category; an image missing from the store counts as not matched.
    What a count or colour question can get right at most follows from it."""
    from torchvision.ops import box_iou

    hits = 0
    for scene in scenes:
        stem, objects = Path(scene["file_name"]).stem, scene["objects"]
        if stem not in store:  # an image the extraction skipped counts as a miss
            continue
        record = store[stem]
        if record.num_regions != len(objects):
            continue
        iou = box_iou(torch.tensor([o["box"] for o in objects], dtype=torch.float32),
                      torch.from_numpy(record.boxes))
        best_iou, best = iou.max(dim=1)
        categories = region_categories(record, class_names)
        names = [categories[k] for k in best.tolist()]
        hits += (len(set(best.tolist())) == len(objects) and bool((best_iou >= min_iou).all())
                 and names == [f"{o['size']} {o['color']} {o['shape']}" for o in objects])
    return hits / max(len(scenes), 1)
