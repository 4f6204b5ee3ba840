"""The main job's region settings against ToyWorld's scenes."""

import numpy as np
import torch
from torchvision.ops import nms

from feature_extraction.toyworld import TOY_SETTINGS, scenes_matched
from vlp.data.features import RegionRecord
from vlp.data.toyworld.scene import sample_scene

NAMES = ["__background__", "small red circle", "large blue square", "small green triangle"]


def record(boxes, labels):
    probs = np.full((len(boxes), len(NAMES)), 0.01, dtype=np.float16)
    probs[np.arange(len(boxes)), labels] = 0.9
    return RegionRecord(boxes=np.array(boxes, dtype=np.float32),
                        features=np.zeros((len(boxes), 8), dtype=np.float16),
                        cls_probs=probs, scores=np.full(len(boxes), 0.9, dtype=np.float32),
                        image_w=128, image_h=128)


def scene(name, *objects):
    return {"file_name": f"{name}.jpg", "objects": [
        dict(zip(("size", "color", "shape"), category.split()), box=box)
        for category, box in objects]}


def test_only_scenes_whose_regions_are_their_shapes_count():
    circle = ("small red circle", [10, 10, 30, 30])
    square = ("large blue square", [60, 60, 100, 100])
    scenes = [scene("exact", circle, square), scene("extra", circle), scene("wrong", circle),
              scene("part", square), scene("loose", circle, square)]
    store = {
        "exact": record([[61, 59, 100, 101], [10, 11, 30, 30]], [2, 1]),
        "extra": record([[10, 10, 30, 30], [12, 12, 24, 24]], [1, 1]),
        "wrong": record([[10, 10, 30, 30]], [3]),  # a triangle where a circle is drawn
        "part": record([[60, 60, 80, 80]], [2]),  # a quarter of the square: IoU 0.25
        "loose": record([[10, 10, 100, 100], [110, 110, 120, 120]], [1, 2]),  # around both
    }
    assert scenes_matched(scenes, store, NAMES) == 1 / 5
    assert scenes_matched(scenes + [scene("skipped", circle)], store, NAMES) == 1 / 6
    assert scenes_matched(scenes[:1], store, NAMES) == 1.0


def test_cross_class_nms_never_merges_two_drawn_shapes():
    """The extraction's cross-class IoU is low enough to drop boxes on part of a shape;
    ToyWorld keeps a gap between shapes, so their boxes never overlap and the NMS keeps
    every drawn shape whatever their scores."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        shapes = sample_scene(rng, 128)
        boxes = torch.tensor([s.box for s in shapes], dtype=torch.float32)
        kept = nms(boxes, torch.rand(len(shapes), generator=torch.Generator().manual_seed(0)),
                   TOY_SETTINGS.agnostic_nms)
        assert len(kept) == len(shapes)
