"""Grid questions about ToyWorld scenes: "Where is the red circle?" -> "top left".

The answer is the cell of a 3x3 grid that holds the named shape's centre. Unlike the
left/right and above/below questions it needs no comparison of two shapes, only the
route from the naming words to one region slot and a reading of that slot's box, which
is what finetuning on the position questions fails to learn (README, "What the main job
does today"); `scripts/toyworld_where_questions.py` trains on them. The files are in the
VQA v2 format, one question per shape its scene can name, with ten human answers of
which each names another shape's cell with probability `noise` (ToyWorld's answers are
noisy too).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlp.data.toyworld.captions import locating
from vlp.data.toyworld.formats import MANIFEST, VQA_SPLIT, ImageRecord, karpathy, vqa_header
from vlp.data.toyworld.language import refer, region, sentence
from vlp.data.toyworld.scene import Shape
from vlp.data.toyworld.vqa import ANSWERS_PER_QUESTION, consensus

QUESTION_TYPE = "where is the"
# Ids are ID_OFFSET + image_id * 100 + k (k: the shape's index in its scene), clear of
# ToyWorld's VQA ids (image_id * 1000 + k) for up to 99,999 images.
ID_OFFSET = 100_000_000
NOISE = 0.1


def grid_questions(scenes: list[dict], split: str, seed: int, image_size: int,
                   noise: float = NOISE) -> tuple[dict, dict]:
    """Official-format questions and annotations for the ToyWorld scenes of VQA split
    `split` (train: Karpathy train + restval)."""
    rng = np.random.default_rng(seed)
    questions, annotations = [], []
    for scene in scenes:
        if scene["pool"] != "toy" or VQA_SPLIT[scene["split"]] != split:
            continue
        shapes = [Shape(o["shape"], o["color"], o["size"], tuple(o["box"]))
                  for o in scene["objects"]]
        for k, shape in enumerate(shapes):
            name = refer(shape, shapes)
            if name is None:
                continue
            truth = region(shape, image_size)
            answers = [{"answer": truth if rng.random() >= noise else
                        region(shapes[int(rng.integers(len(shapes)))], image_size),
                        "answer_confidence": "yes", "answer_id": i + 1}
                       for i in range(ANSWERS_PER_QUESTION)]
            qid = ID_OFFSET + scene["image_id"] * 100 + k
            questions.append({"image_id": scene["image_id"], "question": f"Where is the {name}?",
                              "question_id": qid})
            annotations.append({"question_id": qid, "image_id": scene["image_id"],
                                "question_type": QUESTION_TYPE, "answer_type": "other",
                                "multiple_choice_answer": consensus(answers, truth),
                                "answers": answers})
    header = vqa_header(split, seed)
    return {**header, "questions": questions}, {**header, "annotations": annotations}


def write_grid_questions(toyworld: Path, split: str, out: Path, seed: int = 0
                         ) -> tuple[Path, Path]:
    """OUT/where_toy_{split}_questions.json and ..._annotations.json for the ToyWorld
    directory `toyworld`; files already there are kept."""
    paths = (out / f"where_toy_{split}_questions.json", out / f"where_toy_{split}_annotations.json")
    if all(p.is_file() for p in paths):
        return paths
    scenes, size = _scenes(toyworld)
    for path, data in zip(paths, grid_questions(scenes, split, seed, size)):
        _write(path, data)
    return paths


def _scenes(toyworld: Path) -> tuple[list[dict], int]:
    """The scenes of a ToyWorld directory and its image side."""
    scenes = json.loads((toyworld / "annotations" / "scenes_toy.json").read_text())
    return scenes, json.loads((toyworld / MANIFEST).read_text())["config"]["size"]


def _write(path: Path, data) -> None:
    """JSON written beside `path` and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def place_captions(scenes: list[dict], seed: int, image_size: int) -> dict:
    """Karpathy-format captions of ToyWorld's training images (train and restval), one per
    drawn shape, each saying where it is: "A big red disk in the top left corner of the
    photo." ToyWorld's own captions place one shape of five captions; beside them these
    give the captioner a place to learn for every shape."""
    rng = np.random.default_rng(seed)
    records = []
    for scene in scenes:
        if scene["pool"] != "toy" or VQA_SPLIT[scene["split"]] != "train":
            continue
        shapes = [Shape(o["shape"], o["color"], o["size"], tuple(o["box"]))
                  for o in scene["objects"]]
        records.append(ImageRecord(scene["image_id"], scene["file_name"], scene["split"], shapes,
                                   [sentence(locating(s, rng, image_size)) for s in shapes]))
    return karpathy(records, "toy_places")


def write_place_captions(toyworld: Path, out: Path, seed: int = 0) -> Path:
    """OUT/dataset_toy_places.json for the ToyWorld directory `toyworld`; kept if there."""
    path = out / "dataset_toy_places.json"
    if not path.is_file():
        scenes, size = _scenes(toyworld)
        _write(path, place_captions(scenes, seed, size))
    return path
