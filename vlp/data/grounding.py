"""Referring expressions as examples: one per sentence of a RefCOCO-style split, with its
referent's box and, per region of its image, the IoU of that region's box with it.

A region whose box overlaps the referent at IoU >= POSITIVE_IOU is a right answer (UNITER
and ViLBERT train on those); the model predicts the box of the region it scores highest.

    from vlp.data.grounding import read_expressions
    expressions = read_expressions("refer/data/refcoco/refs(unc).p", ["testA"])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlp.data.captions import image_key
from vlp.data.features.boxes import (corner_centres, image_scale, normalised_corners,
                                     resolve_box_norm)
from vlp.data.refer import box_iou, read_refer
from vlp.data.region_text import RegionTextDataset
from vlp.errors import VLPError

POSITIVE_IOU = 0.5
_REFS_NAME = re.compile(r"refs\((?P<split_by>[^)]+)\)\.p")


@dataclass(frozen=True)
class Expression:
    """One sentence about one referent: the image's store key, the referent's box (x1, y1,
    x2, y2 pixels), the ref's split and the sentence's kind where the file gives one."""
    image_key: str
    ref_id: int
    sent_id: int
    text: str
    box: tuple[float, float, float, float]
    split: str
    kind: str | None


def refer_location(path: str | Path) -> tuple[Path, str, str]:
    """(data root, dataset, split_by) of a `ROOT/<dataset>/refs(<split_by>).p` path."""
    path = Path(path)
    match = _REFS_NAME.fullmatch(path.name)
    if match is None:
        raise VLPError(f"{path}: a RefCOCO refs file is named refs(<split_by>).p, as in "
                       "refcoco/refs(unc).p, with instances.json beside it")
    return path.parent.parent, path.parent.name, match["split_by"]


def read_expressions(path: str | Path, splits) -> list[Expression]:
    """Every sentence of the refs of `splits` (refer.py's split names) in `path`, a
    refs(<split_by>).p file with its instances.json beside it; file order."""
    return expressions_of(read_refer(*refer_location(path)), splits)


def expressions_of(refer, splits) -> list[Expression]:
    """Every sentence of the refs of `splits` in a read ReferDataset; file order."""
    chosen = [r for split in splits for r in refer.refs(split)]
    unique = list({r.ref_id: r for r in chosen}.values())
    return [Expression(image_key(r.file_name), r.ref_id, s.sent_id, s.sent, r.box, r.split, s.kind)
            for r in unique for s in r.sentences]


def boxes_of(expressions: list[Expression]) -> np.ndarray:
    """The referents' boxes [N, 4] float32, x1 y1 x2 y2 pixels."""
    return np.array([e.box for e in expressions], dtype=np.float32).reshape(-1, 4)


def region_iou(record, regions: int, box) -> np.ndarray:
    """IoU of each of the record's first `regions` boxes with `box`, float32 [n]."""
    n = min(record.num_regions, regions)
    return box_iou(np.asarray(record.boxes[:n], dtype=np.float64), np.asarray(box)).astype(np.float32)


def centres(record, regions: int, box_norm: str = "auto", box=None):
    """The centres (x, y over the image's width and height, as box_norm takes them) of
    the record's first `regions` boxes, float32 [n, 2], and of `box` [2] (None without)."""
    box_norm = resolve_box_norm(record, box_norm)
    n = min(record.num_regions, regions)
    regions_at = corner_centres(normalised_corners(record, box_norm)[:, :n]).astype(np.float32)
    if box is None:
        return regions_at, None
    w, h = image_scale(record, box_norm)
    bx1, by1, bx2, by2 = (float(v) for v in box)
    return regions_at, np.array([(bx1 + bx2) / 2 / w, (by1 + by2) / 2 / h], dtype=np.float32)


class GroundingDataset(RegionTextDataset):
    """RegionTextDataset whose examples also carry "iou": each region's IoU with the
    referent `boxes[i]` ([N, 4] pixels), which collate pads into `region_iou`, and the
    centres of the regions and the referent ("centres", "centre": collate's
    `region_centres`, `referent_centre`), which `--grounding_objective centre` regresses."""

    def __init__(self, *args, boxes: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        if len(boxes) != len(self.image_keys):
            raise ValueError("one referent box per expression")
        self.boxes = np.asarray(boxes, dtype=np.float32)

    def complete(self, example: dict, record) -> dict:
        box = self.boxes[example["index"]]
        example["iou"] = region_iou(record, self.regions, box)
        example["centres"], example["centre"] = centres(record, self.regions, self.box_norm, box)
        return example
