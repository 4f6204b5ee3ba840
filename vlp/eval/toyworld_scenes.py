"""What a ToyWorld image shows, read from its annotation files: the shapes drawn, their
attributes and centres, and the image's size.

Read from the formats alone, not from the generator, so that checks built on it (caption
truth, the tests' answers to the VQA questions) are an independent reading:
`annotations/scenes_toy.json` lists each image's objects (`shape`, `color`, `size`, pixel
`box` x1, y1, x2, y2), the COCO `instances_*.json` beside it name one category per size,
colour and shape ("small red circle") and give each image's width and height.

    scenes = read_scenes("runs/quickstart/toyworld")   # image id -> Scene
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlp.errors import VLPError

SCENES_FILE = "scenes_toy.json"
MANIFEST_FILE = "toyworld.json"

# The caption vocabulary: each word and what it names.
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
    """One drawn shape: canonical attribute names and its centre in pixels."""
    shape: str
    color: str
    size: str
    cx: float
    cy: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[Drawn, ...]
    width: int
    height: int
    file_name: str = ""


def _read(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise VLPError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise VLPError(f"{path}: not valid JSON ({err})") from None


def _centre(box) -> tuple[float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2


def scenes_file(source: str | Path) -> Path | None:
    """ToyWorld's scenes file for a ToyWorld directory, its annotations directory or one of
    its annotation files (the scenes file sits beside them); None when there is none."""
    p = Path(source)
    if p.is_dir():
        candidates = [p / "annotations" / SCENES_FILE, p / SCENES_FILE]
    else:
        candidates = [p if p.name == SCENES_FILE else p.parent / SCENES_FILE]
    return next((c for c in candidates if c.is_file()), None)


def read_instances(path: str | Path) -> tuple[dict[int, list[Drawn]], dict[int, tuple[int, int]]]:
    """image id -> objects and image id -> (width, height) from a COCO instances file whose
    category names are 'size color shape'."""
    inst = _read(Path(path))
    names = {}
    for c in inst["categories"]:
        words = c["name"].split()
        if (len(words) != 3 or words[0] not in SIZE_WORDS or words[1] not in COLOR_WORDS
                or words[2] not in SHAPE_WORDS):
            raise VLPError(f"{path}: category {c['name']!r} is not 'size colour shape'")
        names[c["id"]] = words
    objects = {im["id"]: [] for im in inst["images"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in inst["images"]}
    for a in inst["annotations"]:
        size, color, shape = names[a["category_id"]]
        if a.get("size", size) != size:
            raise VLPError(f"{path}: annotation {a['id']} says size {a['size']!r} but its "
                           f"category is {' '.join(names[a['category_id']])!r}")
        x, y, w, h = a["bbox"]
        objects[a["image_id"]].append(Drawn(shape, color, size, *_centre((x, y, x + w, y + h))))
    return objects, sizes


def drawn_objects(root: str | Path) -> dict[int, list[Drawn]]:
    """image id -> objects, from ToyWorld's COCO instances files (the captioned pool)."""
    out: dict[int, list[Drawn]] = {}
    for path in sorted((Path(root) / "annotations").glob("instances_*.json")):
        out.update(read_instances(path)[0])
    return out


def scene_objects(root: str | Path) -> dict[str, list[Drawn]]:
    """file name -> objects, from the scenes file (both pools)."""
    return {s["file_name"]: [Drawn(o["shape"], o["color"], o["size"], *_centre(o["box"]))
                             for o in s["objects"]]
            for s in _read(Path(root) / "annotations" / SCENES_FILE)}


def _image_sizes(annotations: Path) -> tuple[dict[int, tuple[int, int]], int | None]:
    """Sizes per image id from the instances files, and the manifest's one size (which the
    pretraining pool, absent from the instances files, is drawn at)."""
    sizes: dict[int, tuple[int, int]] = {}
    for path in sorted(annotations.glob("instances_*.json")):
        sizes.update(read_instances(path)[1])
    manifest = annotations.parent / MANIFEST_FILE
    side = _read(manifest).get("config", {}).get("size") if manifest.is_file() else None
    return sizes, side


def read_scenes(source: str | Path, dataset: str = "coco") -> dict:
    """id -> Scene for a ToyWorld directory or annotation file. A Karpathy caption file
    (dataset_toy.json, dataset_cc_toy.json) keys its images by the ids results files use
    for it (`vlp.data.captions.results_image_id` with `dataset`); any other source keys
    every scene by its image id."""
    path = scenes_file(source)
    if path is None:
        raise VLPError(f"{source}: not a ToyWorld directory or annotation file (no "
                       f"{SCENES_FILE} beside it)")
    sizes, side = _image_sizes(path.parent)
    scenes = {}
    for s in _read(path):
        width, height = sizes.get(s["image_id"], (side, side))
        if width is None:
            raise VLPError(f"{path}: image {s['image_id']} has no size in the instances "
                           f"files and there is no {MANIFEST_FILE} giving one")
        objects = tuple(Drawn(o["shape"], o["color"], o["size"], *_centre(o["box"]))
                        for o in s["objects"])
        scenes[s["image_id"]] = Scene(objects, width, height, s["file_name"])
    source = Path(source)
    if source.is_file() and source != path:
        data = _read(source)
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return _by_results_id(data["images"], scenes, dataset)
    return scenes


def _by_results_id(images: list[dict], scenes: dict, dataset: str) -> dict:
    from vlp.data.captions import results_image_id

    by_name = {s.file_name: s for s in scenes.values()}
    return {results_image_id(img, dataset): by_name[img["filename"]]
            for img in images if img.get("filename") in by_name}
