"""Referring expressions: RefCOCO, RefCOCO+ and RefCOCOg as distributed (lichengunc/refer).

Layout: `DATA_ROOT/<dataset>/refs(<split_by>).p`, a pickle (written by Python 2) of a list of
refs `{ref_id, image_id, ann_id, category_id, split, file_name, sent_ids, sentences:
[{sent_id, raw, sent, tokens}]}`, and `DATA_ROOT/<dataset>/instances.json` in the COCO
layout, whose annotation `ann_id` holds the referent's box [x, y, w, h]. Splits are
train, val, testA, testB (refcoco, refcoco+), test (refcocog umd) and a few testAB-style
mixtures; `ReferDataset.refs(split)` selects them as refer.py's `getRefIds` does.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlp.errors import VLPError
from vlp.numpy_pickle import PlainUnpickler

# refer.py's getRefIds: testA/testB/testC take every split holding the letter (testAB too),
# testAB-style mixtures and train/val match exactly, test takes every test split.
LETTER_SPLITS = ("testA", "testB", "testC")
EXACT_SPLITS = ("train", "val", "testAB", "testBC", "testAC")
SPLITS = ("train", "val", "test", *LETTER_SPLITS, *EXACT_SPLITS[2:])
# COCO's float boxes may overhang their image by rounding; more than this is an error.
BOX_SLACK = 1.0
_REF_KEYS = ("ref_id", "image_id", "ann_id", "split", "sentences")


@dataclass(frozen=True)
class Sentence:
    """One referring expression: `raw` as typed, `sent` normalised, its `tokens`; `kind`
    (attribute, place, relation) where the file gives one, as ToyWorld's does."""
    sent_id: int
    raw: str
    sent: str
    tokens: tuple[str, ...]
    kind: str | None = None


@dataclass(frozen=True)
class Ref:
    """One referent and its expressions; `box` is x1, y1, x2, y2 in pixels of the image
    `file_name` (instances.json's name for it), `width` x `height` pixels."""
    ref_id: int
    image_id: int
    ann_id: int
    category_id: int
    split: str
    file_name: str
    width: int
    height: int
    box: tuple[float, float, float, float]
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class ReferDataset:
    """A RefCOCO-style dataset: its refs in file order and the category names by id."""
    dataset: str
    split_by: str
    all_refs: tuple[Ref, ...]
    categories: dict[int, str]

    def refs(self, split: str | None = None) -> list[Ref]:
        """The refs of `split` with refer.py's meaning (module docstring); None: all."""
        if split is None:
            return list(self.all_refs)
        return [r for r in self.all_refs if split_matches(split, r.split)]

    def image_ids(self, split: str | None = None) -> list[int]:
        """Sorted ids of the images that the refs of `split` (None: all) lie in."""
        return sorted({r.image_id for r in self.refs(split)})


def split_matches(query: str, split: str) -> bool:
    """Whether a ref of split `split` belongs to the split `query` (refer.py's getRefIds)."""
    if query in LETTER_SPLITS:
        return query[-1] in split
    if query == "test":
        return "test" in split
    if query in EXACT_SPLITS:
        return split == query
    raise VLPError(f"unknown RefCOCO split {query!r}; use one of {', '.join(SPLITS)}")


def load_refs(path: str | Path) -> list[dict]:
    """The list of ref dicts in a refs(<split_by>).p file, read without running code."""
    path = Path(path)
    if not path.is_file():
        raise VLPError(f"RefCOCO refs file {path} not found")
    with open(path, "rb") as f:
        try:
            refs = PlainUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise VLPError(f"{path}: not a plain-data refs pickle ({err})") from None
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise VLPError(f"{path}: holds a {type(refs).__name__}, not a list of ref dicts")
    for i, ref in enumerate(refs):
        missing = [k for k in _REF_KEYS if k not in ref]
        if missing:
            raise VLPError(f"{path}: ref {ref.get('ref_id', f'at position {i}')} lacks "
                           f"{', '.join(missing)}")
    return refs


def read_refer(root: str | Path, dataset: str = "refcoco", split_by: str = "unc"
               ) -> ReferDataset:
    """ROOT/<dataset>/refs(<split_by>).p and ROOT/<dataset>/instances.json, checked: every
    ref's ann_id and image are in instances.json and its box lies inside its image."""
    folder = Path(root) / dataset
    refs_path, instances_path = folder / f"refs({split_by}).p", folder / "instances.json"
    raw_refs = load_refs(refs_path)
    instances = _load_instances(instances_path)
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    refs = tuple(_ref(r, anns, images, refs_path, instances_path) for r in raw_refs)
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    return ReferDataset(dataset, split_by, refs, categories)


def _load_instances(path: Path) -> dict:
    if not path.is_file():
        raise VLPError(f"RefCOCO instances file {path} not found")
    try:
        instances = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise VLPError(f"{path}: not JSON ({err})") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in instances]
    if missing:
        raise VLPError(f"{path}: lacks {', '.join(missing)}")
    return instances


def _ref(raw: dict, anns: dict, images: dict, refs_path: Path, instances_path: Path) -> Ref:
    ref_id = raw["ref_id"]
    ann = anns.get(raw["ann_id"])
    if ann is None:
        raise VLPError(f"{refs_path}: ref {ref_id} names ann_id {raw['ann_id']}, which "
                       f"{instances_path} does not hold")
    image = images.get(raw["image_id"])
    if image is None:
        raise VLPError(f"{refs_path}: ref {ref_id} lies in image {raw['image_id']}, which "
                       f"{instances_path} does not hold")
    x, y, w, h = (float(v) for v in ann["bbox"])
    box = (x, y, x + w, y + h)
    width, height = int(image["width"]), int(image["height"])
    if (w <= 0 or h <= 0 or x < -BOX_SLACK or y < -BOX_SLACK
            or box[2] > width + BOX_SLACK or box[3] > height + BOX_SLACK):
        raise VLPError(f"{refs_path}: ref {ref_id}'s box {list(box)} (ann {raw['ann_id']}) "
                       f"lies outside its {width}x{height} image {raw['image_id']}")
    sentences = tuple(Sentence(s["sent_id"], s["raw"], s.get("sent", s["raw"]),
                               tuple(s["tokens"]), s.get("kind")) for s in raw["sentences"])
    return Ref(ref_id, raw["image_id"], raw["ann_id"], raw.get("category_id", ann["category_id"]),
               raw["split"], image["file_name"], width, height, box, sentences)


def box_iou(a, b) -> np.ndarray:
    """IoU of boxes a[..., 4] and b[..., 4] (x1, y1, x2, y2), pair by pair; 0 where both
    are empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _area(box: np.ndarray) -> np.ndarray:
    return (np.clip(box[..., 2] - box[..., 0], 0, None)
            * np.clip(box[..., 3] - box[..., 1], 0, None))


def accuracy_at_iou(predicted, truth, threshold: float = 0.5) -> float:
    """Acc@0.5: the fraction of predicted boxes [N, 4] whose IoU with the true box is at
    least `threshold` (MAttNet's and UNITER's criterion); 0.0 for no boxes."""
    iou = box_iou(predicted, truth)
    return float(np.mean(iou >= threshold)) if iou.size else 0.0
