"""Caption truth on ToyWorld: each claim of a caption (colour, shape, size, count, place,
relation) checked against the shapes drawn; reference captions all true."""

from __future__ import annotations

import json
import random
from argparse import Namespace

import pytest

from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.errors import VLPError
from vlp.eval.caption_truth import check_caption, check_results
from vlp.eval.toyworld_scenes import Drawn, Scene, read_scenes

SIDE = 120  # a 3x3 grid of 40-pixel cells

# A small yellow triangle at the bottom left, a large red circle at the top right, a small
# blue square in the middle.
SCENE = Scene((Drawn("triangle", "yellow", "small", 20, 100),
               Drawn("circle", "red", "large", 100, 20),
               Drawn("square", "blue", "small", 60, 60)), SIDE, SIDE)


def failed(caption: str, scene: Scene = SCENE) -> list[str]:
    return [c.kind for c in check_caption(caption, scene).failed]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth") / "toyworld"
    generate(root, ToyWorldConfig(images=120, pretrain_images=0, size=96, seed=7), progress=False)
    return root


def write_world(root, scenes: list[dict], side: int = SIDE):
    """scenes_toy.json and a COCO instances file for hand-made scenes."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "scenes_toy.json").write_text(json.dumps([
        {"image_id": i, "file_name": f"toy_{i}.jpg", "pool": "toy", "split": "test",
         "objects": objects} for i, objects in enumerate(scenes, 1)]))
    categories = [{"id": 1 + k, "name": f"{z} {c} {s}"} for k, (z, c, s) in enumerate(
        (z, c, s) for z in ("small", "large") for c in ("red", "blue", "yellow")
        for s in ("circle", "square", "triangle"))]
    ids = {c["name"]: c["id"] for c in categories}
    (ann / "instances_val.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"toy_{i}.jpg", "width": side, "height": side}
                   for i in range(1, len(scenes) + 1)],
        "annotations": [{"id": 100 * i + k, "image_id": i,
                         "category_id": ids[f"{o['size']} {o['color']} {o['shape']}"],
                         "bbox": [o["box"][0], o["box"][1], o["box"][2] - o["box"][0],
                                  o["box"][3] - o["box"][1]]}
                        for i, objects in enumerate(scenes, 1) for k, o in enumerate(objects)],
        "categories": categories}))
    return root


def test_true_captions_of_every_kind_are_true():
    for caption in ("A small yellow triangle, a big red circle and a little blue square.",
                    "There are three shapes in the picture.",
                    "A yellow triangle in the bottom left corner of the photo.",
                    "A red circle at the top of the image.",
                    "A blue square in the center.",
                    "A red circle to the right of a yellow triangle.",
                    "A yellow triangle below a blue square.",
                    "A circle, a square and a triangle on a light background.",
                    "One red shape, one blue shape and one yellow shape."):
        verdict = check_caption(caption, SCENE)
        assert verdict.true, (caption, verdict.failed)
        assert verdict.claims


def test_a_wrong_colour_fails_only_the_colour_claim():
    assert failed("A blue triangle.") == ["colour"]
    assert failed("A large red circle and a purple square.") == ["colour"]
    assert failed("A small yellow triangle and a small yellow square.") == ["colour"]


def test_top_left_for_a_bottom_left_triangle_is_a_false_place():
    assert failed("A yellow triangle in the top left corner of the picture.") == ["place"]
    assert failed("A yellow triangle in the bottom left corner of the picture.") == []
    assert failed("A yellow triangle on the right.") == ["place"]
    assert failed("A blue square at the bottom.") == ["place"]
    # A place is judged on the objects its phrase names: the circle is at the top right.
    assert failed("A circle in the bottom left corner.") == ["place"]


def test_a_relation_the_wrong_way_round_is_false():
    assert failed("A red circle to the left of a yellow triangle.") == ["relation"]
    assert failed("A red circle to the right of a yellow triangle.") == []
    assert failed("A yellow triangle above a red disk.") == ["relation"]
    assert failed("A yellow triangle under a red disk.") == []
    # One object cannot stand in a relation with itself.
    assert failed("A triangle left of a triangle.") == ["relation", "count"]


def test_wrong_counts_are_false():
    assert failed("There are three shapes in the scene.") == []
    assert failed("There are four objects in the scene.") == ["count"]
    assert failed("A scene with two shapes.") == ["count"]
    assert failed("A single object.") == ["count"]
    assert failed("Two blue shapes and one red shape.") == ["count"]


def test_plural_forms_count_the_drawn_shapes():
    two = Scene(SCENE.objects + (Drawn("triangle", "red", "large", 100, 100),), SIDE, SIDE)
    assert failed("Two triangles, a circle and a square.", two) == []
    assert failed("Two triangles, a circle and a square.") == ["count"]
    assert failed("Two boxes.", two) == ["count"]
    assert failed("Three triangles.", two) == ["count"]
    assert failed("Two yellow triangles.", two) == ["count"]


def test_synonyms_name_the_same_shapes_and_sizes():
    for caption in ("A big red disk.", "A large red circle.", "A tiny blue box.",
                    "A little blue square.", "A disk and a box."):
        assert failed(caption) == [], caption
    assert failed("A big blue box.") == ["size"]
    assert failed("A tiny red disk.") == ["size"]
    assert failed("A red box.") == ["colour"]


def test_a_caption_cut_mid_phrase_is_not_fully_true():
    for caption, tail in (("a big red circle , a yellow triangle on a", "on a"),
                          ("a red circle to the right of", "to the right of"),
                          ("a yellow triangle and a", "a"),
                          ("a blue square in the center of the", "in the center of the"),
                          ("a small yellow", "a small yellow")):
        verdict = check_caption(caption, SCENE)
        assert not verdict.true
        assert [(c.kind, c.text) for c in verdict.failed] == [("incomplete", tail)], caption


def test_a_listing_naming_one_object_three_times_is_a_false_count():
    one = check_caption("a blue square , a blue square , a blue square .", SCENE)
    assert [c.kind for c in one.failed] == ["count"] and one.mentioned == 1
    three = Scene((Drawn("square", "blue", "small", 20, 20),
                   Drawn("square", "blue", "small", 60, 20),
                   Drawn("square", "blue", "large", 100, 100)), SIDE, SIDE)
    verdict = check_caption("a blue square , a blue square , a blue square .", three)
    assert verdict.true and verdict.mentioned == 3


def test_results_report_shares_by_kind_and_objects_named(tmp_path):
    root = write_world(tmp_path / "toyworld", [
        [{"shape": "triangle", "color": "yellow", "size": "small", "box": [10, 90, 30, 110]},
         {"shape": "circle", "color": "red", "size": "large", "box": [80, 0, 120, 40]}],
        [{"shape": "square", "color": "blue", "size": "small", "box": [50, 50, 70, 70]}]])
    results = [{"image_id": 1, "caption": "a yellow triangle in the top left corner ."},
               {"image_id": 1, "caption": "a red circle and a yellow triangle ."},
               {"image_id": 2, "caption": "a blue box in the center of the picture ."},
               {"image_id": 2, "caption": "a red box ."}]
    report = check_results(results, root / "annotations" / "scenes_toy.json")
    assert report.captions == 4 and report.fully_true == 0.5
    assert report.by_kind["place"] == (1, 2)      # top left wrong, center right
    assert report.by_kind["colour"] == (4, 5)     # "red box": no red square
    assert report.by_kind["shape"] == (5, 5)
    assert report.mentioned == pytest.approx((1 + 2 + 1 + 0) / 4)
    assert report.drawn == pytest.approx((2 + 2 + 1 + 1) / 4)
    assert [v.true for v in report.verdicts] == [False, True, True, False]
    assert report.as_dict()["by_kind"]["place"]["share"] == 0.5
    assert "captions fully true 50.0% of 4" in report.summary()
    # The same from the ToyWorld directory: sizes come from the instances file.
    assert check_results(results, root).as_dict() == report.as_dict()


def test_an_unknown_image_id_is_named_with_the_file(tmp_path):
    root = write_world(tmp_path / "toyworld", [[]])
    with pytest.raises(VLPError, match=r"image id 7 .*scenes_toy.json"):
        check_results([{"image_id": 7, "caption": "a red box"}],
                      root / "annotations" / "scenes_toy.json")
    with pytest.raises(VLPError, match="no scenes_toy.json"):
        check_results([], tmp_path / "elsewhere.json")


def test_toyworld_reference_captions_are_all_true_and_misplaced_ones_are_not(world):
    data = json.loads((world / "annotations" / "dataset_toy.json").read_text())
    refs = [{"image_id": im["cocoid"], "caption": s["raw"]}
            for im in data["images"] for s in im["sentences"]]
    report = check_results(refs, world / "annotations" / "dataset_toy.json")
    assert report.captions == 600
    assert report.fully_true == 1.0, [(v.caption, v.failed) for v in report.verdicts
                                      if not v.true][:5]
    for kind in ("colour", "shape", "size", "count", "relation", "place"):
        assert report.by_kind[kind][1] > 40, kind  # every kind of claim is exercised
    # The same captions given to other images are mostly false, in every kind (a relation
    # or place the wrong way is as likely as the right one, or likelier).
    ids = [r["image_id"] for r in refs]
    random.Random(0).shuffle(ids)
    shuffled = check_results([{**r, "image_id": i} for r, i in zip(refs, ids)], world)
    assert shuffled.fully_true < 0.3
    for kind, most in (("colour", 0.5), ("shape", 0.8), ("count", 0.6), ("relation", 0.5),
                       ("place", 0.5)):
        assert shuffled.share(kind) < most, kind


def test_decode_writes_the_truth_into_the_metrics(world, tmp_path):
    from vlp.decode.run import write_outputs

    data = json.loads((world / "annotations" / "dataset_toy.json").read_text())
    test = [im for im in data["images"] if im["split"] == "test"]
    results = [{"image_id": im["cocoid"], "caption": im["sentences"][0]["raw"]} for im in test]
    results[0]["caption"] = "a purple triangle , a purple triangle , a purple triangle and a"
    args = Namespace(output_dir=str(tmp_path), split="test", beam_size=1, no_eval=False,
                     src_file=str(world / "annotations" / "dataset_toy.json"), dataset="coco",
                     no_java=True)
    summary = write_outputs(args, tmp_path / "model.1", results)
    metrics = json.loads((tmp_path / "model.1.test.beam1.metrics.json").read_text())
    assert metrics == summary["metrics"] and "CIDEr" in metrics
    truth = metrics["truth"]
    assert truth["captions"] == len(test) and truth["fully_true"] == pytest.approx(
        (len(test) - 1) / len(test))
    assert truth["by_kind"]["incomplete"]["claims"] == 1
    verdicts = json.loads((tmp_path / "model.1.test.beam1.truth.json").read_text())["verdicts"]
    assert [v["image_id"] for v in verdicts if not v["true"]] == [test[0]["cocoid"]]


def test_scenes_of_a_caption_file_are_keyed_by_its_results_ids(world):
    by_root = read_scenes(world)
    by_file = read_scenes(world / "annotations" / "dataset_toy.json")
    assert by_file and all(by_root[i] == s for i, s in by_file.items())
    assert {s.width for s in by_root.values()} == {96}
