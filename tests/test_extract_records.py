"""RegionExtractor: the record contract, batching, min/max boxes, given boxes."""

import numpy as np
import pytest
import torch

from feature_extraction import ExtractSettings, RegionExtractor
from extract_fixtures import scene, tiny_detector
from vlp.data.features import check_record


def image(i, w=64, h=48):
    return torch.from_numpy(scene(i, w, h)[0]).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def model():
    return tiny_detector(seed=0)[0]


def test_records_follow_the_contract(model):
    extractor = RegionExtractor(model, ExtractSettings(conf=0.2, min_boxes=2, max_boxes=5))
    images = [image(0), image(1, 80, 60), image(2, 40, 72)]
    records = extractor(images)
    assert len(records) == 3
    for rec, im in zip(records, images):
        h, w = im.shape[1:]
        assert (rec.image_w, rec.image_h) == (w, h)
        assert 2 <= rec.num_regions <= 5
        assert rec.features.shape == (rec.num_regions, 32)
        assert rec.cls_probs.shape == (rec.num_regions, 4)
        np.testing.assert_allclose(rec.cls_probs.sum(1), 1, rtol=1e-5)
        # The score is one of the region's own non-background class probabilities.
        assert np.isclose(rec.cls_probs[:, 1:], rec.scores[:, None]).any(1).all()
        assert (np.diff(rec.scores) <= 0).all()  # best first
        assert rec.boxes.dtype == np.float32
        assert (rec.boxes[:, 2] <= w).all() and (rec.boxes[:, 3] <= h).all()
        assert (rec.boxes[:, :2] >= 0).all()
        check_record(rec.stored(), "img")


def test_min_and_max_boxes_bound_the_count(model):
    images = [image(3), image(4)]
    none_confident = RegionExtractor(model, ExtractSettings(conf=1.0, min_boxes=3,
                                                            max_boxes=8))(images)
    assert [r.num_regions for r in none_confident] == [3, 3]
    all_confident = RegionExtractor(model, ExtractSettings(conf=0.0, nms_iou=1.0,
                                                           min_boxes=1, max_boxes=7))(images)
    assert [r.num_regions for r in all_confident] == [7, 7]


def test_agnostic_nms_leaves_no_confident_regions_overlapping_beyond_its_iou(model):
    from torchvision.ops import box_iou

    images = [image(i) for i in range(8, 12)]
    loose = dict(conf=0.05, nms_iou=0.5, min_boxes=1, max_boxes=50)
    per_class = RegionExtractor(model, ExtractSettings(**loose))(images)
    agnostic = RegionExtractor(model, ExtractSettings(**loose, agnostic_nms=0.3))(images)

    def worst_overlap(rec):
        iou = box_iou(torch.from_numpy(rec.boxes), torch.from_numpy(rec.boxes))
        return float((iou - torch.eye(len(iou))).max())

    assert max(worst_overlap(r) for r in per_class) > 0.3  # the detector does repeat itself
    for before, after in zip(per_class, agnostic):
        assert worst_overlap(after) <= 0.3 + 1e-6
        assert after.num_regions <= before.num_regions
        # The best region is never the one suppressed.
        np.testing.assert_allclose(after.boxes[0], before.boxes[0], atol=1e-4)


def test_a_batch_equals_its_images_one_by_one(model):
    extractor = RegionExtractor(model, ExtractSettings(min_boxes=2, max_boxes=6))
    together = extractor([image(5), image(6)])
    alone = [extractor([image(5)])[0], extractor([image(6)])[0]]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.features, b.features, atol=1e-4)
        np.testing.assert_allclose(a.cls_probs, b.cls_probs, atol=1e-5)


def test_given_boxes_get_the_box_head_features_of_exactly_those_boxes(model):
    extractor = RegionExtractor(model)
    given = torch.tensor([[4.0, 6.0, 30.0, 40.0], [0.0, 0.0, 64.0, 48.0], [10, 10, 11, 11]])
    im = image(7)
    (rec,) = extractor([im], [given])
    np.testing.assert_array_equal(rec.boxes, given.numpy())
    assert rec.num_regions == 3 and rec.features.shape == (3, 32)
    # The same numbers straight from the detector's modules.
    with torch.no_grad():
        batch, _ = model.transform([im])
        feats = model.backbone(batch.tensors)
        (nh, nw), (h, w) = batch.image_sizes[0], im.shape[1:]
        scaled = given * torch.tensor([nw / w, nh / h, nw / w, nh / h])
        pooled = model.roi_heads.box_roi_pool(feats, [scaled], batch.image_sizes)
        expected = model.roi_heads.box_head(pooled)
        logits, _ = model.roi_heads.box_predictor(expected)
    np.testing.assert_allclose(rec.features, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.cls_probs, logits.softmax(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(rec.scores, logits.softmax(-1)[:, 1:].max(1).values.numpy(),
                               rtol=1e-5)


def test_given_boxes_outside_the_image_are_clipped(model):
    extractor = RegionExtractor(model)
    (rec,) = extractor([image(8)], [torch.tensor([[-5.0, 10, 70, 60]])])
    np.testing.assert_array_equal(rec.boxes, [[0, 10, 64, 48]])
    check_record(rec.stored(), "img")
    # The feature is that of the stored (clipped) box.
    (inside,) = extractor([image(8)], [torch.tensor([[0.0, 10, 64, 48]])])
    np.testing.assert_allclose(rec.features, inside.features, rtol=1e-6)
