"""Detector evaluation on a COCO-format split: mAP (pycocotools) and recall at IoU 0.5."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from feature_extraction.images import decode_rgb


def coco_metrics(model, coco_json, image_dir, label_to_category: dict[int, int], *,
                 batch_size: int = 8, device="cpu", progress: bool = False) -> dict:
    """{"map", "map50", "recall50", "images"} of `model`'s detections.

    recall50 is class-aware: the share of ground-truth boxes that a detection of the
    same class (score >= the model's box_score_thresh) overlaps with IoU >= 0.5.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torchvision.ops import box_iou
    from tqdm import tqdm

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_json))
    model.eval()
    results, found, total = [], 0, 0
    ids = sorted(gt.getImgIds())
    for start in tqdm(range(0, len(ids), batch_size), desc="evaluate", unit="batch",
                      disable=not progress, leave=False):
        chunk = ids[start:start + batch_size]
        infos = gt.loadImgs(chunk)
        images = [torch.from_numpy(decode_rgb(Path(image_dir) / i["file_name"]))
                  .permute(2, 0, 1).float().div(255).to(device) for i in infos]
        with torch.inference_mode():
            outputs = model(images)
        for image_id, det in zip(chunk, outputs):
            boxes, scores = det["boxes"].cpu(), det["scores"].cpu()
            cats = [label_to_category[int(k)] for k in det["labels"].cpu()]
            for b, s, c in zip(boxes.tolist(), scores.tolist(), cats):
                results.append({"image_id": image_id, "category_id": c, "score": s,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
            anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id], iscrowd=False))
            total += len(anns)
            if anns and len(cats):
                gt_boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                          a["bbox"][1] + a["bbox"][3]] for a in anns])
                same = torch.tensor([[a["category_id"] == c for c in cats] for a in anns])
                iou = box_iou(gt_boxes, boxes) * same
                found += int((iou.max(dim=1).values >= 0.5).sum())
    metrics = {"map": 0.0, "map50": 0.0, "recall50": found / max(total, 1), "images": len(ids)}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(results)
            ev = COCOeval(gt, dt, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics["map"], metrics["map50"] = float(ev.stats[0]), float(ev.stats[1])
    return metrics


def category_labels(coco_json) -> tuple[list[int], list[str]]:
    """COCO category ids sorted, and their names; label k + 1 is category ids[k]."""
    data = json.loads(Path(coco_json).read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return [c["id"] for c in cats], [c["name"] for c in cats]
