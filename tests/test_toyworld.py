"""ToyWorld writes the real COCO / Karpathy / CC / VQA v2 formats, and what they say is
what was drawn."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from toyworld_truth import (
    COLOR_WORDS, NUMBER_WORDS, PLURAL_WORDS, SHAPE_WORDS, SIZE_WORDS, drawn_objects,
    load_json, matching, scene_objects, solve,
)
from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.errors import VLPError

SPLITS = ("train", "restval", "val", "test")
VQA_SPLITS = ("train", "val", "test")
RGB = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 215),
       "yellow": (235, 205, 35), "purple": (135, 55, 175), "orange": (245, 135, 25)}


def _made(root: Path, cfg: ToyWorldConfig) -> Path:
    generate(root, cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    cfg = ToyWorldConfig(images=80, pretrain_images=30, seed=3, answer_noise=0.2)
    return _made(tmp_path_factory.mktemp("tw") / "toyworld", cfg)


@pytest.fixture(scope="module")
def clean_world(tmp_path_factory) -> Path:
    """No answer noise and enough images for proportions to mean something."""
    cfg = ToyWorldConfig(images=400, pretrain_images=0, seed=11, answer_noise=0.0)
    return _made(tmp_path_factory.mktemp("tw0") / "toyworld", cfg)


def vqa_pairs(root: Path, split: str):
    q = load_json(root / "annotations" / "vqa" / f"v2_OpenEnded_toy_{split}_questions.json")
    a = load_json(root / "annotations" / "vqa" / f"v2_toy_{split}_annotations.json")
    by_id = {x["question_id"]: x for x in q["questions"]}
    return [(by_id[ann["question_id"]], ann) for ann in a["annotations"]]


# --- COCO detection -------------------------------------------------------------------

def test_instances_load_in_pycocotools_and_cover_the_caption_images(world):
    karpathy = load_json(world / "annotations" / "dataset_toy.json")["images"]
    ids = {split: set() for split in ("train", "val")}
    for split in ids:
        coco = COCO(str(world / "annotations" / f"instances_{split}.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert sorted(c["name"] for c in cats) == sorted(
            f"{z} {c} {s}" for s in ("circle", "square", "triangle") for c in COLOR_WORDS
            for z in ("small", "large"))
        ids[split] = set(coco.getImgIds())
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert 0 < ann["area"] <= w * h
    assert ids["train"].isdisjoint(ids["val"])
    assert ids["train"] == {im["cocoid"] for im in karpathy if im["split"] in ("train", "restval")}
    assert ids["val"] == {im["cocoid"] for im in karpathy if im["split"] in ("val", "test")}


def test_ground_truth_boxes_score_perfect_map_in_cocoeval(world):
    coco = COCO(str(world / "annotations" / "instances_val.json"))
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in coco.loadAnns(coco.getAnnIds())]
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP@0.5


def test_pixels_inside_each_mask_have_the_category_colour(world):
    coco = COCO(str(world / "annotations" / "instances_train.json"))
    for img in coco.loadImgs(coco.getImgIds()[:15]):
        pixels = np.asarray(Image.open(world / "images" / img["file_name"]).convert("RGB"))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            mask = coco.annToMask(ann).astype(bool)
            color = coco.loadCats(ann["category_id"])[0]["name"].split()[1]
            median = np.median(pixels[mask], axis=0)
            assert np.abs(median - RGB[color]).max() < 30, (img["file_name"], color, median)


# --- Karpathy captions ----------------------------------------------------------------

def test_karpathy_file_has_every_field(world):
    data = load_json(world / "annotations" / "dataset_toy.json")
    assert set(data) == {"images", "dataset"}
    sentids = []
    for imgid, im in enumerate(data["images"]):
        assert {"filepath", "filename", "imgid", "cocoid", "split", "sentids",
                "sentences"} <= set(im)
        assert im["imgid"] == imgid and im["split"] in SPLITS
        assert (world / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) == 5 == len({s["raw"] for s in im["sentences"]})
        for s in im["sentences"]:
            assert s["imgid"] == imgid and s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower())
            sentids.append(s["sentid"])
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
    assert sentids == list(range(len(sentids)))
    assert Counter(im["split"] for im in data["images"]) == {
        "train": 56, "restval": 8, "val": 8, "test": 8}


def caption_claims(tokens: list[str], objects) -> None:
    """Every colour+shape, count and relation a caption states holds in the image."""
    text = " ".join(tokens)
    assert any(t in SHAPE_WORDS or t in PLURAL_WORDS or t in ("shape", "shapes", "object", "objects")
               for t in tokens), text
    for color in set(tokens) & set(COLOR_WORDS):
        assert matching(objects, [color]), text
    for a, b in zip(tokens, tokens[1:]):
        if a in COLOR_WORDS and b in SHAPE_WORDS:
            assert matching(objects, [a, b]), text
        if a in SIZE_WORDS and (b in COLOR_WORDS or b in SHAPE_WORDS):
            assert matching(objects, [a, b]), text
    for m in re.finditer(r"\b(one|two|three|four|single) (?:(\w+) )?(\w+)\b", text):
        words = [w for w in (m[2], m[3]) if w]
        if words[-1] in PLURAL_WORDS or words[-1] in ("shapes", "objects", "shape", "object"):
            if words[0] in SIZE_WORDS:
                continue  # 'one small ...' is not how ToyWorld counts
            assert len(matching(objects, words)) == NUMBER_WORDS[m[1]], text
    phrase = r"an? ((?:(?:small|little|tiny|large|big) )?\w+ \w+)"
    relation = r"(?:to the )?(left of|right of|above|over|below|under)"
    for m in re.finditer(rf"{phrase} {relation} {phrase}", text):
        holds = {"left of": lambda dx, dy: dx < 0 and abs(dx) >= abs(dy),
                 "right of": lambda dx, dy: dx > 0 and abs(dx) >= abs(dy),
                 "above": lambda dx, dy: dy < 0 and abs(dy) > abs(dx),
                 "below": lambda dx, dy: dy > 0 and abs(dy) > abs(dx)}
        rel = {"over": "above", "under": "below"}.get(m[2], m[2])
        assert any(holds[rel](a.cx - b.cx, a.cy - b.cy)
                   for a in matching(objects, m[1].split())
                   for b in matching(objects, m[3].split())), text


def test_captions_mention_the_objects_actually_drawn(world):
    objects = drawn_objects(world)
    for im in load_json(world / "annotations" / "dataset_toy.json")["images"]:
        for s in im["sentences"]:
            caption_claims(s["tokens"], objects[im["cocoid"]])


def test_caption_checker_catches_a_wrong_caption(world):
    objects = drawn_objects(world)
    im = load_json(world / "annotations" / "dataset_toy.json")["images"][0]
    present = {o.color for o in objects[im["cocoid"]]}
    absent = next(c for c in COLOR_WORDS if c not in present)
    with pytest.raises(AssertionError):
        caption_claims(["a", absent, "circle"], objects[im["cocoid"]])


def test_cc_pool_is_a_separate_karpathy_file_of_truthful_alt_text(world):
    cc = load_json(world / "annotations" / "dataset_cc_toy.json")["images"]
    toy = load_json(world / "annotations" / "dataset_toy.json")["images"]
    scenes = {s["file_name"]: s for s in load_json(world / "annotations" / "scenes_toy.json")}
    assert len(cc) == 30 and {im["split"] for im in cc} <= {"train", "val"}
    assert {im["filename"] for im in cc}.isdisjoint(im["filename"] for im in toy)
    assert {im["cocoid"] for im in cc}.isdisjoint(im["cocoid"] for im in toy)
    objects = scene_objects(world)
    for im in cc:
        assert len(im["sentences"]) == 1 and (world / im["filepath"] / im["filename"]).is_file()
        colors = {o["color"] for o in scenes[im["filename"]]["objects"]}
        assert set(im["sentences"][0]["tokens"]) & set(COLOR_WORDS) <= colors
        caption_claims(im["sentences"][0]["tokens"], objects[im["filename"]])
    # Like web alt-text, some say where one shape is from another, or how many there are.
    texts = [" ".join(im["sentences"][0]["tokens"]) for im in cc]
    assert any(re.search(r"\b(left of|right of|above|over|below|under)\b", t) for t in texts)
    assert any(re.search(r"\b(two|three|four) \w+", t) for t in texts)


# --- VQA v2 ---------------------------------------------------------------------------

def test_vqa_files_have_every_field(world):
    karpathy = load_json(world / "annotations" / "dataset_toy.json")["images"]
    seen = set()
    for split in VQA_SPLITS:
        root = world / "annotations" / "vqa"
        q = load_json(root / f"v2_OpenEnded_toy_{split}_questions.json")
        a = load_json(root / f"v2_toy_{split}_annotations.json")
        for f in (q, a):  # the official API copies these from the files
            assert {"info", "license", "data_type", "data_subtype", "task_type"} <= set(f)
        allowed = {im["cocoid"] for im in karpathy
                   if {"restval": "train"}.get(im["split"], im["split"]) == split}
        assert [x["question_id"] for x in q["questions"]] == [x["question_id"] for x in a["annotations"]]
        for question, ann in vqa_pairs(world, split):
            assert question["image_id"] == ann["image_id"] in allowed
            assert ann["answer_type"] in ("yes/no", "number", "other")
            assert question["question"].lower().startswith(ann["question_type"])
            assert [x["answer_id"] for x in ann["answers"]] == list(range(1, 11))
            assert all(x["answer_confidence"] in ("yes", "maybe", "no") for x in ann["answers"])
            counts = Counter(x["answer"] for x in ann["answers"])
            assert counts[ann["multiple_choice_answer"]] == max(counts.values())
            seen.add(question["question_id"])
    assert len(seen) >= 4 * len(karpathy)  # unique ids, about five per image


def test_answers_are_right_apart_from_the_injected_noise(world, clean_world):
    for root, noise in ((clean_world, 0.0), (world, 0.2)):
        objects = drawn_objects(root)
        right = total = 0
        for split in VQA_SPLITS:
            for question, ann in vqa_pairs(root, split):
                truth = solve(question["question"], objects[question["image_id"]])
                right += sum(x["answer"] == truth for x in ann["answers"])
                total += len(ann["answers"])
                if noise == 0:
                    assert ann["multiple_choice_answer"] == truth, question
        assert right / total == pytest.approx(1 - noise, abs=0.03)


def test_question_kinds_and_yes_no_balance(clean_world):
    pairs = [p for s in VQA_SPLITS for p in vqa_pairs(clean_world, s)]
    types = Counter(ann["question_type"] for _, ann in pairs)
    assert set(types) == {"what color is the", "what shape is the", "how many", "is there a",
                          "is the"}
    assert min(types.values()) > 0.1 * len(pairs)
    yes_no = [ann["multiple_choice_answer"] for _, ann in pairs if ann["answer_type"] == "yes/no"]
    assert 0.42 < yes_no.count("yes") / len(yes_no) < 0.58
    numbers = {ann["multiple_choice_answer"] for _, ann in pairs if ann["answer_type"] == "number"}
    assert numbers <= {"0", "1", "2", "3", "4"} and len(numbers) >= 4


# --- images, determinism, reuse -------------------------------------------------------

def test_images_are_128px_rgb_jpegs_one_per_record(world):
    files = sorted((world / "images").iterdir())
    assert len(files) == 80 + 30
    for f in files[:10]:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.size == (128, 128) and im.mode == "RGB"
    assert (world / "preview.png").stat().st_size > 0


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    cfg = ToyWorldConfig(images=12, pretrain_images=5, seed=7, image_format="png")
    a, b = tree(_made(tmp_path / "a", cfg)), tree(_made(tmp_path / "b", cfg))
    assert a == b and len(a) > 17
    c = tree(_made(tmp_path / "c", ToyWorldConfig(images=12, pretrain_images=5, seed=8,
                                                  image_format="png")))
    assert c["annotations/dataset_toy.json"] != a["annotations/dataset_toy.json"]


def test_rerun_with_same_settings_keeps_the_directory(tmp_path):
    cfg = ToyWorldConfig(images=8, pretrain_images=0)
    first = generate(tmp_path / "w", cfg, progress=False)
    stamp = (tmp_path / "w" / "annotations" / "dataset_toy.json").stat().st_mtime_ns
    again = generate(tmp_path / "w", cfg, progress=False)
    assert not first["reused"] and again["reused"]
    assert (tmp_path / "w" / "annotations" / "dataset_toy.json").stat().st_mtime_ns == stamp
    other = ToyWorldConfig(images=8, pretrain_images=0, seed=1)
    with pytest.raises(VLPError, match="seed 0 \\(asked 1\\)"):
        generate(tmp_path / "w", other, progress=False)
    assert generate(tmp_path / "w", other, overwrite=True, progress=False)["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no temp or old copies left
