"""How much of ToyWorld's VQA can a model reading a main job's regions get right?

Answers every question of a split from the stored regions alone, read as the scene: each
region is the shape its most likely class names ("small red circle") at its box's centre.
The answers are scored with the official metric, so the figures are the ceiling that the
regions set for any model reading them; what falls short is the detector's doing (a shape
read as another class, a box on part of a shape, a shape missed), which a VQA model
learns on the training scenes and cannot answer on new ones.

    python scripts/toyworld_region_answers.py runs/quickstart [--split test] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from feature_extraction.toyworld import region_categories
from vlp.data.features import open_store
from vlp.data.toyworld.language import PLURALS
from vlp.data.toyworld.scene import COLORS, SHAPES, SIZES
from vlp.eval.vqa_score import score_files

SINGULAR = {plural: word for word, plural in PLURALS.items()}
CANONICAL = {"disk": "circle", "box": "square"}


@dataclass(frozen=True)
class Seen:
    size: str
    color: str
    shape: str
    cx: float
    cy: float


def regions_as_scene(record, class_names: list[str]) -> list[Seen]:
    seen = []
    for (x1, y1, x2, y2), category in zip(record.boxes.tolist(),
                                          region_categories(record, class_names)):
        size, color, shape = category.split()
        seen.append(Seen(size, color, shape, (x1 + x2) / 2, (y1 + y2) / 2))
    return seen


def fitting(words: list[str], seen: list[Seen]) -> list[Seen]:
    """The shapes a description such as ['large', 'red', 'object'] or ['boxes'] fits."""
    found = seen
    for w in words:
        w = SINGULAR.get(w, w)
        w = CANONICAL.get(w, w)
        if w in COLORS:
            found = [s for s in found if s.color == w]
        elif w in SIZES:
            found = [s for s in found if s.size == w]
        elif w in SHAPES:
            found = [s for s in found if s.shape == w]
        elif w not in ("object", "objects", "shapes"):
            raise ValueError(f"unknown word {w!r}")
    return found


def answer(question: str, seen: list[Seen]) -> str:
    """The answer the scene `seen` gives; '-' where the question names no single shape
    in it (a detector error that no reading of the regions answers)."""
    q = question.rstrip("?")
    if m := re.fullmatch(r"What (color|shape) is the (.+)", q):
        found = fitting(m[2].split(), seen)
        return getattr(found[0], m[1]) if len(found) == 1 else "-"
    if m := re.fullmatch(r"How many (.+?) (?:are there|are in the picture|can you see)", q):
        return str(len(fitting(m[1].split(), seen)))
    if m := re.fullmatch(r"Is there an? (.+)", q):
        return "yes" if fitting(m[1].split(), seen) else "no"
    m = (re.fullmatch(r"Is the (.+) to the left or to the right of the (.+)", q)
         or re.fullmatch(r"Is the (.+) above or below the (.+)", q))
    if m is None:
        raise ValueError(f"not a ToyWorld question: {question!r}")
    a, b = fitting(m[1].split(), seen), fitting(m[2].split(), seen)
    if len(a) != 1 or len(b) != 1:
        return "-"
    if "left" in q:
        return "left" if a[0].cx < b[0].cx else "right"
    return "above" if a[0].cy < b[0].cy else "below"


def region_answers(run: Path, split: str) -> list[dict]:
    ann = run / "toyworld" / "annotations"
    class_names = json.loads((run / "detector" / "detector.json").read_text())["class_names"]
    files = {s["image_id"]: Path(s["file_name"]).stem
             for s in json.loads((ann / "scenes_toy.json").read_text()) if s["pool"] == "toy"}
    questions = json.loads((ann / "vqa" / f"v2_OpenEnded_toy_{split}_questions.json")
                           .read_text())["questions"]
    with open_store(run / "regions.lmdb") as store:
        return [{"question_id": q["question_id"],
                 "answer": answer(q["question"],
                                  regions_as_scene(store[files[q["image_id"]]], class_names))}
                for q in questions]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a main job's output (vlp quickstart --out RUN)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, default=None,
                   help="results file (default RUN/vqa/regions.SPLIT.vqa_results.json)")
    args = p.parse_args(argv)
    out = args.out or args.run / "vqa" / f"regions.{args.split}.vqa_results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(region_answers(args.run, args.split)) + "\n")
    vqa = args.run / "toyworld" / "annotations" / "vqa"
    scores = score_files(out, vqa / f"v2_OpenEnded_toy_{args.split}_questions.json",
                         vqa / f"v2_toy_{args.split}_annotations.json")
    print(f"answers from the regions alone ({args.split}) -> {out}")
    print(scores.summary())


if __name__ == "__main__":
    main()
