"""An independent reading of ToyWorld files, for tests: what is drawn where, and the
answer each VQA question must have. Written from the file formats alone, so it checks
the generator rather than repeating it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

SHAPE_WORDS = {"circle": "circle", "disk": "circle", "square": "square", "box": "square",
               "triangle": "triangle"}
PLURAL_WORDS = {"circles": "circle", "disks": "circle", "squares": "square",
                "boxes": "square", "triangles": "triangle"}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large",
              "big": "large"}
COLOR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange")
NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "single": 1}


@dataclass(frozen=True)
class Drawn:
    shape: str
    color: str
    size: str
    cx: float
    cy: float


def load_json(path: Path):
    return json.loads(Path(path).read_text())


def drawn_objects(root: Path) -> dict[int, list[Drawn]]:
    """image id -> objects, from the COCO instances files (category 'size color shape')."""
    out: dict[int, list[Drawn]] = {}
    for split in ("train", "val"):
        inst = load_json(root / "annotations" / f"instances_{split}.json")
        names = {c["id"]: c["name"] for c in inst["categories"]}
        for im in inst["images"]:
            out.setdefault(im["id"], [])
        for a in inst["annotations"]:
            size, color, shape = names[a["category_id"]].split()
            assert size == a["size"], (a["id"], size, a["size"])
            x, y, w, h = a["bbox"]
            out[a["image_id"]].append(Drawn(shape, color, size, x + w / 2, y + h / 2))
    return out


def scene_objects(root: Path) -> dict[str, list[Drawn]]:
    """file name -> objects, from scenes_toy.json (both pools; boxes are x1, y1, x2, y2)."""
    return {s["file_name"]: [Drawn(o["shape"], o["color"], o["size"],
                                   (o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2)
                             for o in s["objects"]]
            for s in load_json(root / "annotations" / "scenes_toy.json")}


def matching(objects: list[Drawn], words: list[str]) -> list[Drawn]:
    """Objects fitting a description such as ['large', 'red', 'object']."""
    found = objects
    for w in words:
        if w in COLOR_WORDS:
            found = [o for o in found if o.color == w]
        elif w in SIZE_WORDS:
            found = [o for o in found if o.size == SIZE_WORDS[w]]
        elif w in SHAPE_WORDS:
            found = [o for o in found if o.shape == SHAPE_WORDS[w]]
        elif w in PLURAL_WORDS:
            found = [o for o in found if o.shape == PLURAL_WORDS[w]]
        elif w not in ("object", "objects", "shape", "shapes"):
            raise ValueError(f"unknown word {w!r}")
    return found


def _the(objects, ref: str) -> Drawn:
    found = matching(objects, ref.split())
    assert len(found) == 1, f"'the {ref}' is not unique among {objects}"
    return found[0]


def solve(question: str, objects: list[Drawn]) -> str:
    """The true answer to a ToyWorld question about `objects`."""
    q = question.lower().rstrip("?")
    if m := re.fullmatch(r"what color is the (.+)", q):
        return _the(objects, m[1]).color
    if m := re.fullmatch(r"what shape is the (.+)", q):
        return _the(objects, m[1]).shape
    if m := re.fullmatch(r"how many (.+?) (are there|are in the picture|can you see)", q):
        return str(len(matching(objects, m[1].split())))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)", q):
        return "yes" if matching(objects, [m[1], m[2]]) else "no"
    if m := re.fullmatch(r"is the (.+) to the left or to the right of the (.+)", q):
        a, b = _the(objects, m[1]), _the(objects, m[2])
        assert a.cx != b.cx
        return "left" if a.cx < b.cx else "right"
    if m := re.fullmatch(r"is the (.+) above or below the (.+)", q):
        a, b = _the(objects, m[1]), _the(objects, m[2])
        assert a.cy != b.cy
        return "above" if a.cy < b.cy else "below"
    raise ValueError(f"unknown question {question!r}")
