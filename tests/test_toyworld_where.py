"""Grid questions ("Where is the red circle?" -> "top left") checked against what was drawn."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from toyworld_truth import _the, drawn_objects, load_json
from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.data.toyworld.where import (
    ID_OFFSET, grid_questions, place_captions, write_grid_questions, write_place_captions,
)
from vlp.eval.caption_truth import check_caption
from vlp.eval.toyworld_scenes import read_scenes

SIZE = 128
CELLS = {"top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
         "bottom right"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("where") / "toyworld"
    generate(root, ToyWorldConfig(images=120, pretrain_images=0, seed=5), progress=False)
    return root, load_json(root / "annotations" / "scenes_toy.json")


def cell(x: float, y: float) -> str:
    """The 3x3 cell of a centre, written out independently of the generator."""
    row = "top" if y < SIZE / 3 else "bottom" if y >= 2 * SIZE / 3 else ""
    col = "left" if x < SIZE / 3 else "right" if x >= 2 * SIZE / 3 else ""
    return f"{row} {col}".strip() or "center"


def test_without_noise_every_answer_is_the_named_shapes_cell(world):
    root, scenes = world
    objects = drawn_objects(root)  # from the COCO instances files
    questions, annotations = grid_questions(scenes, "train", seed=0, image_size=SIZE, noise=0.0)
    splits = {s["image_id"]: s["split"] for s in scenes}
    assert len(questions["questions"]) > 120  # about two nameable shapes per training scene
    for q, a in zip(questions["questions"], annotations["annotations"]):
        assert q["question_id"] == a["question_id"] and splits[q["image_id"]] in ("train", "restval")
        name = q["question"].removeprefix("Where is the ").removesuffix("?")
        shape = _the(objects[q["image_id"]], name)
        truth = cell(shape.cx, shape.cy)
        assert a["multiple_choice_answer"] == truth
        assert [x["answer"] for x in a["answers"]] == [truth] * 10
        assert a["question_type"] == "where is the" and a["answer_type"] == "other"


def test_noisy_answers_name_a_cell_of_the_same_scene(world):
    root, scenes = world
    objects = drawn_objects(root)
    _, annotations = grid_questions(scenes, "train", seed=0, image_size=SIZE, noise=0.5)
    right = total = 0
    for a in annotations["annotations"]:
        cells = {cell(o.cx, o.cy) for o in objects[a["image_id"]]}
        answers = [x["answer"] for x in a["answers"]]
        assert set(answers) <= cells <= CELLS
        counts = Counter(answers)
        assert counts[a["multiple_choice_answer"]] == max(counts.values())
        right += answers.count(a["multiple_choice_answer"])
        total += len(answers)
    assert 0.5 < right / total < 0.95  # a wrong answer is another shape's cell, or the same


def test_ids_are_unique_and_clear_of_the_vqa_questions(world):
    root, scenes = world
    vqa = load_json(root / "annotations" / "vqa" / "v2_OpenEnded_toy_train_questions.json")
    ids = [q["question_id"] for split in ("train", "test")
           for q in grid_questions(scenes, split, seed=0, image_size=SIZE)[0]["questions"]]
    assert len(set(ids)) == len(ids) and min(ids) >= ID_OFFSET
    assert not set(ids) & {q["question_id"] for q in vqa["questions"]}


def test_written_files_are_kept_and_match_the_seed(world, tmp_path):
    root, scenes = world
    q, a = write_grid_questions(root, "test", tmp_path, seed=4)
    expected = grid_questions(scenes, "test", seed=4, image_size=SIZE)
    assert json.loads(q.read_text()) == expected[0] and json.loads(a.read_text()) == expected[1]
    before = q.stat().st_mtime_ns
    assert write_grid_questions(root, "test", tmp_path, seed=99) == (q, a)
    assert q.stat().st_mtime_ns == before and not list(tmp_path.glob("*.partial"))


def test_place_captions_place_every_training_shape_truly(world, tmp_path):
    root, scenes = world
    drawn = read_scenes(root / "annotations" / "scenes_toy.json")  # image id -> Scene
    data = place_captions(scenes, seed=3, image_size=SIZE)
    training = {s["file_name"]: s for s in scenes if s["split"] in ("train", "restval")}
    assert {im["filename"] for im in data["images"]} == set(training)
    for im in data["images"]:
        scene = training[im["filename"]]
        assert im["split"] == scene["split"] and im["cocoid"] == scene["image_id"]
        assert len(im["sentences"]) == len(scene["objects"])
        for sent in im["sentences"]:
            verdict = check_caption(sent["raw"], drawn[scene["image_id"]])
            assert verdict.true and [c.kind for c in verdict.claims].count("place") == 1, sent
    said = Counter(" ".join(s["tokens"][-5:-3]) for im in data["images"] for s in im["sentences"])
    assert len(said) >= 6  # corners, sides and the centre are all said
    path = write_place_captions(root, tmp_path, seed=3)
    assert json.loads(path.read_text()) == data
    assert write_place_captions(root, tmp_path, seed=8) == path and json.loads(path.read_text()) == data
