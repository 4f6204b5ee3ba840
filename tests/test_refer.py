"""RefCOCO-style referring expressions: the refs pickle and instances.json as distributed,
refer.py's splits, refusal of pickled code, IoU and Acc@0.5, and ToyWorld's refcoco_toy."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest

from vlp.data.refer import accuracy_at_iou, box_iou, load_refs, read_refer
from vlp.data.toyworld import MANIFEST, ToyWorldConfig, generate
from vlp.data.toyworld.refer import write_refcoco_toy
from vlp.errors import VLPError
from vlp.numpy_pickle import PlainUnpickler

# --- a hand-written RefCOCO -----------------------------------------------------------

IMAGES = [{"id": 10, "file_name": "COCO_train2014_000000000010.jpg", "width": 640, "height": 480},
          {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "width": 100, "height": 50}]
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 18, "name": "dog", "supercategory": "animal"}]
# ann id -> (image id, category id, COCO bbox x, y, w, h)
ANNS = {101: (10, 1, [10.0, 20.0, 30.0, 40.0]), 102: (10, 18, [300.5, 100.0, 200.0, 379.0]),
        103: (11, 1, [0.0, 0.0, 100.0, 50.0]), 104: (11, 18, [90.0, 10.0, 20.0, 10.0])}
SPLITS = {0: "train", 1: "val", 2: "testA", 3: "testB", 4: "testAB", 5: "test"}


def _ref(ref_id: int, ann_id: int, split: str, raws: list[str], kind: str | None = None) -> dict:
    image_id, category_id, _ = ANNS.get(ann_id, (10, 1, None))
    sentences = []
    for i, raw in enumerate(raws):
        s = {"tokens": raw.lower().split(), "raw": raw, "sent_id": 10 * ref_id + i,
             "sent": raw.lower()}
        if kind is not None:
            s["kind"] = kind
        sentences.append(s)
    return {"sent_ids": [s["sent_id"] for s in sentences],
            "file_name": f"COCO_train2014_{image_id:012d}_{ref_id}.jpg", "ann_id": ann_id,
            "ref_id": ref_id, "image_id": image_id, "split": split, "sentences": sentences,
            "category_id": category_id}


def _refs() -> list[dict]:
    refs = [_ref(0, 101, "train", ["Man on left", "guy in red"]),
            _ref(1, 102, "val", ["dog"], kind="attribute")]
    refs += [_ref(k, 103, SPLITS[k], [f"person {k}"]) for k in (2, 3, 4, 5)]
    return refs


def _write(root: Path, refs: list[dict], anns: dict = ANNS, dataset: str = "refcoco",
           split_by: str = "unc") -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    annotations = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
                    "iscrowd": 0,
                    "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0], b[1] + b[3]]]}
                   for k, (i, c, b) in anns.items()]
    (folder / "instances.json").write_text(json.dumps(
        {"images": IMAGES, "annotations": annotations, "categories": CATEGORIES}))
    return folder


def test_reads_refs_with_boxes_in_pixels_and_image_names_from_instances(tmp_path):
    _write(tmp_path, _refs())
    data = read_refer(tmp_path, "refcoco", "unc")
    assert [r.ref_id for r in data.refs()] == [0, 1, 2, 3, 4, 5]
    first, dog = data.refs()[:2]
    assert first.box == (10.0, 20.0, 40.0, 60.0) and dog.box == (300.5, 100.0, 500.5, 479.0)
    assert (first.image_id, first.ann_id, first.category_id) == (10, 101, 1)
    assert first.file_name == "COCO_train2014_000000000010.jpg"
    assert (first.width, first.height) == (640, 480)
    assert [(s.sent_id, s.raw, s.sent, s.tokens, s.kind) for s in first.sentences] == [
        (0, "Man on left", "man on left", ("man", "on", "left"), None),
        (1, "guy in red", "guy in red", ("guy", "in", "red"), None)]
    assert dog.sentences[0].kind == "attribute"
    assert data.categories == {1: "person", 18: "dog"}
    assert data.image_ids() == [10, 11] and data.image_ids("val") == [10]


@pytest.mark.parametrize("split, expected", [
    ("train", [0]), ("val", [1]), ("testA", [2, 4]), ("testB", [3, 4]), ("testAB", [4]),
    ("test", [2, 3, 4, 5]), ("testC", []),
])
def test_splits_select_as_refer_py_does(tmp_path, split, expected):
    _write(tmp_path, _refs())
    assert [r.ref_id for r in read_refer(tmp_path).refs(split)] == expected


@pytest.mark.parametrize("split", ["testD", "Train", "restval"])
def test_unknown_split_names_it_and_the_valid_ones(tmp_path, split):
    _write(tmp_path, _refs())
    with pytest.raises(VLPError) as err:
        read_refer(tmp_path).refs(split)
    message = str(err.value)
    assert repr(split) in message and "testA" in message and "val" in message
    assert "\n" not in message


# --- the plain-data unpickler -----------------------------------------------------------

# {'raw': 'café', 'ids': set([7])} as Python 2.7's pickle.dumps(..., 2) writes it: the str
# is UTF-8 bytes (SHORT_BINSTRING) and the set is built through __builtin__.set.
PY2_PICKLE = (b"\x80\x02}q\x00(U\x03rawq\x01U\x05caf\xc3\xa9q\x02U\x03idsq\x03"
              b"c__builtin__\nset\nq\x04]q\x05K\x07a\x85q\x06Rq\x07u.")


def test_python2_pickle_reads_text_as_utf8_and_sets():
    assert PlainUnpickler(io.BytesIO(PY2_PICKLE)).load() == {"raw": "café", "ids": {7}}


def test_python3_plain_values_round_trip_through_protocol_2():
    value = {"b": b"\x00\xff", "f": frozenset({1, 2}), "t": (1.5, None, True), "s": {"x"},
             "n": [-(2 ** 70), 3]}
    assert PlainUnpickler(io.BytesIO(pickle.dumps(value, protocol=2))).load() == value


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_pickled_code_is_refused_before_it_runs(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsCommand(control), protocol=2))
    assert control.exists()  # the payload does run when unpickled plainly
    marker = tmp_path / "MARKER"
    _write(tmp_path, [_RunsCommand(marker)])
    with pytest.raises(pickle.UnpicklingError, match=f"{os.system.__module__}.system"):
        PlainUnpickler(io.BytesIO((tmp_path / "refcoco" / "refs(unc).p").read_bytes())).load()
    with pytest.raises(VLPError) as err:
        read_refer(tmp_path)
    assert str(tmp_path / "refcoco" / "refs(unc).p") in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_other_classes_are_refused(tmp_path):
    path = tmp_path / "refs.p"
    path.write_bytes(pickle.dumps([np.arange(3)], protocol=2))
    with pytest.raises(VLPError, match="refs.p: not a plain-data refs pickle .*numpy"):
        load_refs(path)


# --- bad inputs ---------------------------------------------------------------------------

def test_ref_with_an_ann_id_missing_from_instances_names_the_ref(tmp_path):
    _write(tmp_path, _refs() + [_ref(7, 999, "train", ["ghost"])])
    with pytest.raises(VLPError, match=r"ref 7 names ann_id 999, which .*instances.json"):
        read_refer(tmp_path)


def test_box_outside_its_image_names_the_ref(tmp_path):
    _write(tmp_path, _refs() + [_ref(8, 104, "train", ["tail"])])
    with pytest.raises(VLPError,
                       match=r"ref 8's box \[90.0, 10.0, 110.0, 20.0\].* 100x50 image 11"):
        read_refer(tmp_path)


def test_missing_files_name_their_paths(tmp_path):
    folder = _write(tmp_path, _refs())
    with pytest.raises(VLPError, match=r"refs file .*refcoco/refs\(google\)\.p not found"):
        read_refer(tmp_path, "refcoco", "google")
    with pytest.raises(VLPError, match=r"refs file .*refcoco\+/refs\(unc\)\.p not found"):
        read_refer(tmp_path, "refcoco+")
    (folder / "instances.json").unlink()
    with pytest.raises(VLPError, match=f"instances file {folder / 'instances.json'} not found"):
        read_refer(tmp_path)


# --- IoU and Acc@0.5 ----------------------------------------------------------------------

def test_iou_and_accuracy_match_hand_computation():
    truth = [[0, 0, 10, 10]] * 6
    predicted = [[0, 0, 10, 10],      # same box: 1
                 [5, 5, 15, 15],      # 5x5 overlap, 100 + 100 - 25: 25/175
                 [10, 0, 20, 10],     # touching edge: 0
                 [0, 0, 10, 5],       # inside, half the area: 50/100
                 [0, 0, 10, 4.9],     # 49/100
                 [2, 2, 8, 8]]        # inside: 36/100
    expected = [1.0, 25 / 175, 0.0, 0.5, 0.49, 0.36]
    np.testing.assert_allclose(box_iou(predicted, truth), expected, rtol=1e-12)
    np.testing.assert_allclose(box_iou([[5, 5, 15, 15]], [[0, 0, 10, 10]]), [25 / 175])
    assert accuracy_at_iou(predicted, truth) == pytest.approx(2 / 6)
    assert accuracy_at_iou(predicted, truth, threshold=0.3) == pytest.approx(4 / 6)
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


# --- ToyWorld's refcoco_toy -----------------------------------------------------------------

SEED = 3
SIZE = 128
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large",
              "big": "large"}
COLORS = {"red", "green", "blue", "yellow", "purple", "orange"}
NOUNS = {"circle": "circle", "disk": "circle", "square": "square", "box": "square",
         "triangle": "triangle", "object": None, "shape": None, "one": None}
PLACES = {"in the center": ("middle", "middle"), "at the top": ("top", "middle"),
          "at the bottom": ("bottom", "middle"), "on the left": ("middle", "left"),
          "on the right": ("middle", "right")}
PLACES.update({f"in the {r} {c} corner": (r, c) for r in ("top", "bottom")
               for c in ("left", "right")})
RELATIONS = {"to the left of": "left", "left of": "left", "to the right of": "right",
             "right of": "right", "above": "above", "over": "above", "below": "below",
             "under": "below"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refer") / "toy"
    generate(root, ToyWorldConfig(images=40, pretrain_images=0, seed=SEED), progress=False)
    return root


def _description(words: list[str]) -> tuple[dict, list[str]]:
    """{'size', 'color', 'shape'} that the leading words ask for, and the words after."""
    want = {}
    while words and (words[0] in SIZE_WORDS or words[0] in COLORS):
        key = "size" if words[0] in SIZE_WORDS else "color"
        want[key] = SIZE_WORDS.get(words[0], words[0])
        words = words[1:]
    assert words and words[0] in NOUNS, words
    if NOUNS[words[0]] is not None:
        want["shape"] = NOUNS[words[0]]
    return want, words[1:]


def _fits(obj: dict, want: dict) -> bool:
    return all(obj[k] == v for k, v in want.items())


def _center(obj: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = obj["box"]
    return (x1 + x2) / 2, (y1 + y2) / 2


def _cell(obj: dict) -> tuple[str, str]:
    cx, cy = _center(obj)
    return (("top", "middle", "bottom")[min(2, int(3 * cy / SIZE))],
            ("left", "middle", "right")[min(2, int(3 * cx / SIZE))])


def _on_side(a: dict, b: dict, side: str) -> bool:
    (ax, ay), (bx, by) = _center(a), _center(b)
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[side]


def _dominant(a: dict, b: dict, side: str) -> bool:
    (ax, ay), (bx, by) = _center(a), _center(b)
    if side in ("left", "right"):
        return abs(ax - bx) >= abs(ay - by)
    return abs(ay - by) > abs(ax - bx)


def _referents(raw: str, objects: list[dict]) -> tuple[str, list[int]]:
    """The expression's kind and the indices of the objects it fits, read from its words."""
    words = raw.split()
    assert words[0] == "the", raw
    want, rest = _description(words[1:])
    fitting = [k for k, o in enumerate(objects) if _fits(o, want)]
    tail = " ".join(rest)
    if not tail:
        return "attribute", fitting
    if tail in PLACES:
        return "place", [k for k in fitting if _cell(objects[k]) == PLACES[tail]]
    phrase = next(p for p in sorted(RELATIONS, key=len, reverse=True)
                  if tail.startswith(p + " the "))
    anchor_want, after = _description(tail[len(phrase) + 5:].split())
    assert after == [], raw
    anchors = [k for k, o in enumerate(objects) if _fits(o, anchor_want)]
    assert len(anchors) == 1, f"{raw!r}: the other shape is not singled out"
    anchor, side = objects[anchors[0]], RELATIONS[phrase]
    on_side = [k for k in fitting if k != anchors[0] and _on_side(objects[k], anchor, side)]
    return "relation", [k for k in on_side if _dominant(objects[k], anchor, side)] \
        if len(on_side) == 1 else on_side


def _targets(root: Path) -> tuple[list[dict], dict[int, dict], list[int]]:
    """The raw refs, the scenes by image id and each ref's object index in its scene,
    found from its ann_id's bbox in instances.json."""
    folder = root / "annotations" / "refcoco_toy"
    refs = load_refs(folder / "refs(unc).p")
    anns = {a["id"]: a for a in json.loads((folder / "instances.json").read_text())["annotations"]}
    scenes_path = root / "annotations" / "scenes_toy.json"
    scenes = {s["image_id"]: s for s in json.loads(scenes_path.read_text())}
    targets = []
    for ref in refs:
        x, y, w, h = anns[ref["ann_id"]]["bbox"]
        hits = [k for k, o in enumerate(scenes[ref["image_id"]]["objects"])
                if o["box"] == [x, y, x + w, y + h]]
        assert len(hits) == 1
        targets.append(hits[0])
    return refs, scenes, targets


def _check_expressions(root: Path) -> int:
    """Assert that every expression under ROOT fits its referent alone; count them."""
    refs, scenes, targets = _targets(root)
    checked = 0
    for ref, target in zip(refs, targets):
        objects = scenes[ref["image_id"]]["objects"]
        for s in ref["sentences"]:
            kind, fitting = _referents(s["raw"], objects)
            assert (kind, fitting) == (s["kind"], [target]), (s["raw"], objects)
            assert s["tokens"] == s["raw"].split() and s["sent"] == s["raw"]
            checked += 1
    return checked


def test_every_toy_expression_singles_out_its_referent(toy):
    assert _check_expressions(toy) > 300


def _shape(shape: str, color: str, size: str, box: list[int]) -> dict:
    return {"shape": shape, "color": color, "size": size, "box": box}


# Two circles in one cell; identical twins apart; identical twins in one cell.
HARD_SCENES = [
    [_shape("circle", "red", "small", [4, 4, 20, 20]),
     _shape("circle", "blue", "small", [24, 24, 40, 40]),
     _shape("square", "green", "large", [80, 80, 120, 120])],
    [_shape("circle", "red", "small", [4, 50, 20, 66]),
     _shape("circle", "red", "small", [100, 50, 116, 66])],
    [_shape("square", "red", "small", [4, 4, 20, 20]),
     _shape("square", "red", "small", [24, 4, 40, 20]),
     _shape("triangle", "blue", "large", [60, 80, 100, 120])],
]


def test_hand_made_scenes_get_longer_descriptions_where_the_short_ones_fit_two(tmp_path):
    scenes = [{"image_id": k + 1, "file_name": f"toy_{k + 1:012d}.jpg", "pool": "toy",
               "split": ("train", "test", "val")[k], "objects": objects}
              for k, objects in enumerate(HARD_SCENES)]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "scenes_toy.json").write_text(json.dumps(scenes))
    write_refcoco_toy(tmp_path, seed=0, image_size=SIZE)
    assert _check_expressions(tmp_path) >= 10
    refs, _, targets = _targets(tmp_path)
    assert [(r["image_id"], t) for r, t in zip(refs, targets)] == [
        (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 2)]
    assert "the red circle in the top left corner" in [s["raw"] for s in refs[0]["sentences"]]
    assert {s["kind"] for r in refs[3:5] for s in r["sentences"]} == {"place"}
    assert [r["split"] for r in refs] == ["train"] * 3 + ["testA"] * 2 + ["val"]


def test_toy_refs_have_all_kinds_and_several_expressions_each(toy):
    refs, scenes, _ = _targets(toy)
    kinds = {s["kind"] for r in refs for s in r["sentences"]}
    assert kinds == {"attribute", "place", "relation"}
    counts = [len(r["sentences"]) for r in refs]
    assert min(counts) >= 2 and np.mean(counts) >= 4
    assert all(r["sent_ids"] == [s["sent_id"] for s in r["sentences"]] for r in refs)
    sent_ids = [i for r in refs for i in r["sent_ids"]]
    assert sent_ids == list(range(len(sent_ids)))
    assert [r["ref_id"] for r in refs] == list(range(len(refs)))
    drawn = sum(len(s["objects"]) for s in scenes.values() if s["pool"] == "toy")
    assert 0.8 * drawn <= len(refs) <= drawn


def test_toy_splits_follow_karpathy_and_crowding(toy):
    refs, scenes, _ = _targets(toy)
    wanted = {"train": "train", "restval": "train", "val": "val"}
    for ref in refs:
        scene = scenes[ref["image_id"]]
        crowded = "testB" if len(scene["objects"]) >= 3 else "testA"
        assert ref["split"] == wanted.get(scene["split"], crowded)
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}


def test_toy_instances_hold_every_drawn_shape_in_coco_layout(toy):
    folder = toy / "annotations" / "refcoco_toy"
    instances = json.loads((folder / "instances.json").read_text())
    scenes = [s for s in json.loads((toy / "annotations" / "scenes_toy.json").read_text())
              if s["pool"] == "toy"]
    names = {c["id"]: c["name"] for c in instances["categories"]}
    got = sorted((a["image_id"], names[a["category_id"]], tuple(a["bbox"]))
                 for a in instances["annotations"])
    drawn = sorted((s["image_id"], f"{o['size']} {o['color']} {o['shape']}",
                    (o["box"][0], o["box"][1],
                     o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]))
                   for s in scenes for o in s["objects"])
    assert got == drawn
    assert len({a["id"] for a in instances["annotations"]}) == len(got)
    assert sorted((i["id"], i["file_name"], i["width"], i["height"]) for i in instances["images"]) \
        == sorted((s["image_id"], s["file_name"], SIZE, SIZE) for s in scenes)


def test_toy_refs_pickle_is_protocol_2_plain_data_and_reads_back(toy):
    raw = (toy / "annotations" / "refcoco_toy" / "refs(unc).p").read_bytes()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert raw[:2] == b"\x80\x02" and not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"}
    data = read_refer(toy / "annotations", "refcoco_toy", "unc")
    refs, scenes, targets = _targets(toy)
    assert [r.ref_id for r in data.refs()] == [r["ref_id"] for r in refs]
    for ref, target in zip(data.refs(), targets):
        scene = scenes[ref.image_id]
        assert ref.box == tuple(float(v) for v in scene["objects"][target]["box"])
        assert (ref.file_name, ref.width, ref.height) == (scene["file_name"], SIZE, SIZE)
        assert all(s.kind in ("attribute", "place", "relation") for s in ref.sentences)
    assert len(data.refs("test")) == len(data.refs("testA")) + len(data.refs("testB")) > 0


def _copy_scenes(toy: Path, dest: Path) -> Path:
    (dest / "annotations").mkdir(parents=True, exist_ok=True)
    shutil.copy(toy / "annotations" / "scenes_toy.json", dest / "annotations")
    shutil.copy(toy / MANIFEST, dest)
    return dest


def test_toy_writer_is_deterministic_and_keeps_existing_files(toy, tmp_path):
    made = toy / "annotations" / "refcoco_toy"
    again = write_refcoco_toy(_copy_scenes(toy, tmp_path / "a"), seed=SEED)
    assert again == tmp_path / "a" / "annotations" / "refcoco_toy"
    for name in ("refs(unc).p", "instances.json"):
        assert (again / name).read_bytes() == (made / name).read_bytes()
    other = write_refcoco_toy(_copy_scenes(toy, tmp_path / "b"), seed=SEED + 1)
    assert (other / "refs(unc).p").read_bytes() != (made / "refs(unc).p").read_bytes()
    kept = tmp_path / "c" / "annotations" / "refcoco_toy" / "refs(unc).p"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"mine")
    write_refcoco_toy(_copy_scenes(toy, tmp_path / "c"), seed=SEED)
    assert kept.read_bytes() == b"mine"
    assert (kept.parent / "instances.json").read_bytes() == (made / "instances.json").read_bytes()
    assert sorted(p.name for p in kept.parent.iterdir()) == ["instances.json", "refs(unc).p"]
