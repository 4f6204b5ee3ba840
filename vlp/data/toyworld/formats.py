"""ToyWorld records laid out in the real formats: Karpathy caption JSON, COCO instances,
VQA v2 questions/annotations. Pure functions from generated records to JSON objects."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlp.data.toyworld.language import tokenize
from vlp.data.toyworld.scene import COLORS, SHAPES, SIZES, Shape
from vlp.data.toyworld.vqa import Question, consensus

# The directory's manifest: the config it was drawn with, counts, the format version.
MANIFEST = "toyworld.json"
# Karpathy split -> VQA split (as COCO's train2014 holds Karpathy's train images).
VQA_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}
# Karpathy split -> COCO instances file (the detector trains on train+restval).
DETECTION_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "val"}
# One category per size, colour and shape ("small red circle"): the detector's class
# probabilities then carry every attribute the captions and questions name, as a visual
# genome detector's do; where shapes lie is left to the boxes.
CATEGORIES = [{"id": 1 + i, "name": f"{z} {c} {s}", "supercategory": s}
              for i, (s, z, c) in enumerate((s, z, c) for s in SHAPES for z in SIZES
                                            for c in COLORS)]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}
LICENSES = [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}]


def info(what: str, seed: int) -> dict:
    return {"description": f"ToyWorld {what} (synthetic, seed {seed})", "version": "1.0",
            "year": 2026, "contributor": "vlp toyworld", "url": "", "date_created": ""}


@dataclass
class ImageRecord:
    image_id: int
    file_name: str
    split: str
    shapes: list[Shape]
    captions: list[str] = field(default_factory=list)
    questions: list[tuple[Question, list[dict]]] = field(default_factory=list)


def karpathy(records: list[ImageRecord], dataset: str, filepath: str = "images") -> dict:
    """dataset_coco.json layout: images[*] with split, filepath, filename, ids, sentences."""
    images, sentid = [], 0
    for imgid, r in enumerate(records):
        sentences = []
        for raw in r.captions:
            sentences.append({"tokens": tokenize(raw), "raw": raw, "imgid": imgid,
                              "sentid": sentid})
            sentid += 1
        images.append({"filepath": filepath, "sentids": [s["sentid"] for s in sentences],
                       "filename": r.file_name, "imgid": imgid, "split": r.split,
                       "sentences": sentences, "cocoid": r.image_id})
    return {"images": images, "dataset": dataset}


def coco_instances(records: list[ImageRecord], image_size: int, seed: int) -> dict:
    """instances_*.json: one category per size+colour+shape, polygon segmentations, xywh boxes."""
    images, annotations = [], []
    for r in records:
        images.append({"id": r.image_id, "file_name": r.file_name, "width": image_size,
                       "height": image_size, "license": 1})
        for s in r.shapes:
            x1, y1, x2, y2 = s.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": r.image_id,
                "category_id": CATEGORY_ID[s.category],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": round(s.area(), 2),
                "segmentation": [[round(v, 2) for xy in s.polygon() for v in xy]],
                "iscrowd": 0, "size": s.size,
            })
    return {"info": info("detection", seed), "licenses": LICENSES, "images": images,
            "annotations": annotations, "categories": CATEGORIES}


def vqa_header(split: str, seed: int) -> dict:
    # The official VQA API copies these five keys from the question/annotation files.
    return {"info": info(f"VQA {split}", seed), "license": LICENSES[0],
            "task_type": "Open-Ended", "data_type": "toyworld", "data_subtype": split}


def vqa(records: list[ImageRecord], split: str, seed: int) -> tuple[dict, dict]:
    """(questions file, annotations file) of the VQA v2 layout for one split."""
    questions, annotations = [], []
    for r in records:
        for k, (q, answers) in enumerate(r.questions):
            qid = r.image_id * 1000 + k  # VQA's own numbering: image id, then question
            questions.append({"image_id": r.image_id, "question": q.question,
                              "question_id": qid})
            annotations.append({
                "question_id": qid, "image_id": r.image_id,
                "question_type": q.question_type, "answer_type": q.answer_type,
                "multiple_choice_answer": consensus(answers, q.answer), "answers": answers,
            })
    header = vqa_header(split, seed)
    return {**header, "questions": questions}, {**header, "annotations": annotations}


def scenes(records: list[ImageRecord], pool: str) -> list[dict]:
    """Ground truth of what was drawn, for checks and reports."""
    return [{"image_id": r.image_id, "file_name": r.file_name, "pool": pool, "split": r.split,
             "objects": [{"shape": s.shape, "color": s.color, "size": s.size,
                          "box": list(s.box)} for s in r.shapes]}
            for r in records]
