"""The region record contract, its byte encoding and the model's box/class vector."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlp.data.features import (RecordError, RegionRecord, StoreError, box_class_vector,
                               check_record)
from vlp.data.features import codec


def record(**changes):
    fields = dict(
        boxes=np.array([[10, 5, 30, 25], [0, 0, 100, 50]], np.float32),
        features=np.array([[1, 2, 3], [4, 5, 6]], np.float32),
        cls_probs=np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32),
        scores=np.array([0.9, 0.5], np.float32),
        image_w=100, image_h=50)
    fields.update(changes)
    return RegionRecord(**fields)


def test_box_class_vector_matches_hand_computed_values():
    out = box_class_vector(record())
    assert out.shape == (2, 3 + 6) and out.dtype == np.float32
    # box 0: x1/w, y1/h, x2/w, y2/h = .1 .1 .3 .5; area .2 * .4 = .08; score .9
    v = np.array([0.1, 0.1, 0.3, 0.5, 0.08, 0.9])
    mean, var = 1.98 / 6, ((v - 0.33) ** 2).sum() / 6
    np.testing.assert_allclose(out[0, :6], (v - 0.33) / np.sqrt(var + 1e-5), atol=1e-5)
    assert mean == pytest.approx(0.33)
    # box 1 covers the image: 0 0 1 1, area 1, score .5
    v1 = np.array([0, 0, 1, 1, 1, 0.5])
    np.testing.assert_allclose(out[1, :6], (v1 - 3.5 / 6) / np.sqrt(v1.var() + 1e-5), atol=1e-5)
    c = np.array([0.1, 0.7, 0.2])
    np.testing.assert_allclose(out[0, 6:], (c - 1 / 3) / np.sqrt(0.206666667 / 3 + 1e-5),
                               atol=1e-5)


def vlp_reference(boxes6: np.ndarray, cls: np.ndarray) -> torch.Tensor:
    """VLP's loader, restated: lazy size estimate, area, layer norms without affine."""
    pe = torch.from_numpy(boxes6.copy())
    w = pe[:, [0, 2]].max() + 1e-5
    h = pe[:, [1, 3]].max() + 1e-5
    pe[:, [0, 2]] /= w
    pe[:, [1, 3]] /= h
    area = ((pe[:, 3] - pe[:, 1]) * (pe[:, 2] - pe[:, 0])).clamp(min=0)
    pe = torch.cat([pe[:, :4], area[:, None], pe[:, 5:]], dim=1)
    c = torch.from_numpy(cls)
    return torch.cat([F.layer_norm(pe, [6]), F.layer_norm(c, [c.shape[1]])], dim=1)


def test_lazy_box_norm_reproduces_vlp_for_its_1601_classes():
    rng = np.random.default_rng(0)
    x1, y1 = rng.uniform(0, 400, 100), rng.uniform(0, 300, 100)
    boxes6 = np.stack([x1, y1, x1 + rng.uniform(1, 200, 100), y1 + rng.uniform(1, 150, 100),
                       rng.integers(1, 1601, 100), rng.random(100)], 1).astype(np.float32)
    cls = rng.dirichlet(np.ones(1601), 100).astype(np.float32)
    rec = RegionRecord(boxes=boxes6[:, :4], features=np.zeros((100, 8), np.float32),
                       cls_probs=cls, scores=boxes6[:, 5])
    out = box_class_vector(rec, box_norm="lazy")
    assert out.shape == (100, 1607)
    np.testing.assert_allclose(out, vlp_reference(boxes6, cls).numpy(), atol=2e-5)


def test_lazy_norm_divides_by_the_largest_coordinate_not_the_image():
    rec = record(image_w=None, image_h=None)
    lazy = box_class_vector(rec, box_norm="lazy")
    # largest x is 100 and largest y 50, as the image: lazy equals exact up to the 1e-5
    np.testing.assert_allclose(lazy, box_class_vector(record()), atol=1e-4)
    with pytest.raises(ValueError, match="box_norm='lazy'"):
        box_class_vector(rec)
    with pytest.raises(ValueError, match="box_norm must be one of"):
        box_class_vector(record(), box_norm="pixels")


def test_records_without_classes_give_the_six_box_dims():
    out = box_class_vector(record(cls_probs=np.zeros((2, 0), np.float32)))
    assert out.shape == (2, 6) and np.isfinite(out).all()


@pytest.mark.parametrize("change, message", [
    (dict(features=np.ones((3, 3))), r"features must be \[2, \*\]"),
    (dict(boxes=np.ones((2, 5))), r"boxes must be \[N, 4\]"),
    (dict(scores=np.ones(3)), r"scores must be \[2\]"),
    (dict(features=np.array([[1, np.nan, 3], [4, 5, 6]])), "features contain NaN"),
    (dict(cls_probs=np.array([[np.inf, 0, 0], [1, 0, 0]])), "cls_probs contain NaN"),
    (dict(scores=np.array([np.nan, 1])), "scores contain NaN"),
    (dict(boxes=np.array([[10, 5, 30, 25], [0, 0, 102, 50]])), "box 1 .* outside the 100x50 image"),
    (dict(boxes=np.array([[10, 5, 30, 25], [-3, 0, 10, 50]])), "box 1 .* outside the 100x50"),
    (dict(boxes=np.array([[30, 5, 10, 25], [0, 0, 10, 10]])), "box 0 has x2 < x1"),
    (dict(boxes=np.array([[10, 5, 30, np.inf], [0, 0, 10, 10]])), "box 0 contains NaN"),
    (dict(image_w=0), "image size"),
    (dict(boxes=np.zeros((0, 4)), features=np.zeros((0, 3)), cls_probs=np.zeros((0, 3)),
          scores=np.zeros(0)), r"no regions"),
])
def test_check_record_names_the_image_and_the_fault(change, message):
    with pytest.raises(ValueError, match=f"image 'COCO_x_000001': {message}"):
        check_record(record(**change), "COCO_x_000001")


def test_check_record_accepts_one_pixel_of_slack_and_unknown_sizes():
    check_record(record(boxes=np.array([[0, 0, 101, 51], [0, 0, 10, 10]])), "a")
    far = np.array([[0, 0, 5000, 4000], [0, 0, 10, 10]], np.float32)
    check_record(record(boxes=far, image_w=None, image_h=None), "a")
    with pytest.raises(RecordError, match="store holds 4"):
        check_record(record(), "a", feature_dim=4)


def test_float16_overflow_is_refused_after_conversion():
    big = record(features=np.array([[1e5, 0, 0], [0, 0, 0]])).stored()
    with pytest.raises(RecordError, match="features contain NaN or inf"):
        check_record(big, "a")


def test_codec_round_trip_is_exact_and_writable():
    rec = record().stored()
    back = codec.decode(memoryview(codec.encode(rec)), "a", "x")
    for name in ("boxes", "features", "cls_probs", "scores"):
        got, want = getattr(back, name), getattr(rec, name)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        assert got.flags.writeable
    assert (back.image_w, back.image_h) == (100, 50)
    unsized = codec.decode(codec.encode(record(image_w=None, image_h=None).stored()), "a", "x")
    assert unsized.image_w is None and not unsized.has_image_size


def test_codec_refuses_damaged_bytes():
    data = codec.encode(record().stored())
    with pytest.raises(StoreError, match="img7.*/s.lmdb is corrupt"):
        codec.decode(data[:-3], "img7", "/s.lmdb")
    with pytest.raises(StoreError, match="img7.*bad header"):
        codec.decode(b"XXXX" + data[4:], "img7", "/s.lmdb")
