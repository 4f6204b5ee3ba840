"""ToyWorld's referring expressions in RefCOCO's layout: `annotations/refcoco_toy/refs(unc).p`
and `annotations/refcoco_toy/instances.json`, read back by
`vlp.data.refer.read_refer(toyworld / "annotations", "refcoco_toy", "unc")`.

One ref per drawn shape of the toy pool that some expression singles out. Its expressions
are of three kinds, each sentence carrying `kind`:
- attribute: "the red circle" (the shortest unique description), "the large red circle"
  and the same with synonyms ("the big red disk");
- place: "the circle in the top right corner", with the shortest description after which
  the place (a cell of a 3x3 grid) singles the shape out, and "the one on the left" where
  the place alone does;
- relation: "the triangle above the blue square", with the shortest description after
  which the relation to another, uniquely described shape singles it out: no other shape
  so described lies on that side of the other shape at all.

Splits are per image: Karpathy train and restval -> train, val -> val, test -> testA for
scenes of one or two shapes and testB for three or four. RefCOCO's testA and testB hold
different referents (people, other objects); ToyWorld's hold sparse and crowded scenes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from vlp.data.toyworld.formats import MANIFEST, ImageRecord, coco_instances, info
from vlp.data.toyworld.language import (
    NOUNS, SIZE_WORDS, pick, place_words, refer, region, relation, tokenize,
)
from vlp.data.toyworld.scene import Shape
from vlp.errors import VLPError

DATASET = "refcoco_toy"
SPLIT_BY = "unc"
REFER_SPLIT = {"train": "train", "restval": "train", "val": "val"}
CROWDED = 3  # a test scene with this many shapes or more is in testB
_STREAM = 7  # the expressions' RNG stream, apart from the generator's per-image streams
# Descriptions that name the shape, shortest first: what a place or relation qualifies.
_DESCRIPTIONS = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))
_ANY_SHAPE = ("one", "shape", "object")
_RELATION_WORDS = {"left of": ("left of", "to the left of"),
                   "right of": ("right of", "to the right of"),
                   "above": ("above", "over"), "below": ("below", "under")}


def refer_split(karpathy_split: str, n_shapes: int) -> str:
    """RefCOCO split of a ToyWorld image (module docstring)."""
    if karpathy_split == "test":
        return "testB" if n_shapes >= CROWDED else "testA"
    return REFER_SPLIT[karpathy_split]


def _described(s: Shape, attrs: tuple[str, ...]) -> str:
    return " ".join(getattr(s, a) for a in attrs)


def _alike(t: Shape, s: Shape, attrs: tuple[str, ...]) -> bool:
    return all(getattr(t, a) == getattr(s, a) for a in attrs)


def attribute_expressions(s: Shape, shapes: list[Shape], rng: np.random.Generator
                          ) -> list[str]:
    """'the red circle', 'the large red circle', 'the big red disk'; none for a shape with
    an identical twin."""
    name = refer(s, shapes)
    if name is None:
        return []
    synonyms = f"{pick(rng, SIZE_WORDS[s.size])} {s.color} {pick(rng, NOUNS[s.shape])}"
    return list(dict.fromkeys(f"the {d}" for d in (name, s.category, synonyms)))


def place_expressions(s: Shape, shapes: list[Shape], size: int, rng: np.random.Generator
                      ) -> list[str]:
    """'the circle in the top right corner' and 'the one on the left', where they single
    `s` out."""
    where = region(s, size)
    out = []
    for attrs in _DESCRIPTIONS:
        if all(region(t, size) != where for t in shapes if t is not s and _alike(t, s, attrs)):
            out.append(f"the {_described(s, attrs)} {place_words(where)}")
            break
    if all(region(t, size) != where for t in shapes if t is not s):
        out.append(f"the {pick(rng, _ANY_SHAPE)} {place_words(where)}")
    return out


def _on_side(t: Shape, anchor: Shape, rel: str) -> bool:
    (tx, ty), (ax, ay) = t.center, anchor.center
    return {"left of": tx < ax, "right of": tx > ax, "above": ty < ay, "below": ty > ay}[rel]


def relation_expressions(s: Shape, shapes: list[Shape], size: int, rng: np.random.Generator
                         ) -> list[str]:
    """'the triangle above the blue square', one per other shape that has a unique
    description and a relation to `s` that singles `s` out."""
    out = []
    for anchor in shapes:
        name = refer(anchor, shapes) if anchor is not s else None
        rel = relation(s, anchor, size) if name is not None else None
        if rel is None:
            continue
        for attrs in _DESCRIPTIONS:
            rivals = [t for t in shapes if t is not s and t is not anchor and _alike(t, s, attrs)]
            if not any(_on_side(t, anchor, rel) for t in rivals):
                words = pick(rng, _RELATION_WORDS[rel])
                out.append(f"the {_described(s, attrs)} {words} the {name}")
                break
    return out


def expressions(s: Shape, shapes: list[Shape], size: int, rng: np.random.Generator
                ) -> list[tuple[str, str]]:
    """(kind, text) of every expression for `s` in its scene `shapes`."""
    return ([("attribute", t) for t in attribute_expressions(s, shapes, rng)]
            + [("place", t) for t in place_expressions(s, shapes, size, rng)]
            + [("relation", t) for t in relation_expressions(s, shapes, size, rng)])


def _sentence(sent_id: int, raw: str, kind: str) -> dict:
    tokens = tokenize(raw)
    return {"tokens": tokens, "raw": raw, "sent_id": sent_id, "sent": " ".join(tokens),
            "kind": kind}


def refcoco_toy(scenes: list[dict], image_size: int, seed: int) -> tuple[list[dict], dict]:
    """(refs, instances) of the toy pool's scenes in RefCOCO's layout."""
    rng = np.random.default_rng([seed, _STREAM])
    records = [ImageRecord(sc["image_id"], sc["file_name"], sc["split"],
                           [Shape(o["shape"], o["color"], o["size"], tuple(o["box"]))
                            for o in sc["objects"]])
               for sc in scenes if sc["pool"] == "toy"]
    instances = {**coco_instances(records, image_size, seed),
                 "info": info("referring expressions", seed)}
    annotations = iter(instances["annotations"])
    refs, sent_id = [], 0
    for r in records:
        stem, _, ext = r.file_name.rpartition(".")
        for k, s in enumerate(r.shapes):
            ann = next(annotations)
            found = expressions(s, r.shapes, image_size, rng)
            if not found:
                continue
            sentences = [_sentence(sent_id + i, raw, kind) for i, (kind, raw) in enumerate(found)]
            sent_id += len(sentences)
            refs.append({"sent_ids": [x["sent_id"] for x in sentences],
                         "file_name": f"{stem}_{k}.{ext}", "ann_id": ann["id"],
                         "ref_id": len(refs), "image_id": r.image_id,
                         "split": refer_split(r.split, len(r.shapes)), "sentences": sentences,
                         "category_id": ann["category_id"]})
    return refs, instances


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VLPError(f"{path} not found: is this a ToyWorld directory?") from None


def _write_new(path: Path, data: bytes) -> None:
    if path.is_file():
        return
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_refcoco_toy(toyworld_dir: str | Path, seed: int = 0, image_size: int | None = None
                      ) -> Path:
    """Write TOYWORLD/annotations/refcoco_toy/{refs(unc).p, instances.json} and return
    that folder; files already there are kept. `image_size` defaults to the manifest's."""
    root = Path(toyworld_dir)
    out = root / "annotations" / DATASET
    refs_path, instances_path = out / f"refs({SPLIT_BY}).p", out / "instances.json"
    if refs_path.is_file() and instances_path.is_file():
        return out
    scenes = _read_json(root / "annotations" / "scenes_toy.json")
    if image_size is None:
        image_size = _read_json(root / MANIFEST)["config"]["size"]
    refs, instances = refcoco_toy(scenes, image_size, seed)
    out.mkdir(parents=True, exist_ok=True)
    # Protocol 2: what Python 2-era tools such as refer.py can read.
    _write_new(refs_path, pickle.dumps(refs, protocol=2))
    _write_new(instances_path, json.dumps(instances, separators=(",", ":")).encode("utf-8"))
    return out
