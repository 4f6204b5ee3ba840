"""extract_regions into LMDB and HDF5 stores: ids, resume, given boxes from COCO."""

import json

import numpy as np
import pytest

from feature_extraction import ExtractSettings, RegionExtractor, extract_regions, from_directory
from feature_extraction.commands import extract_images
from extract_fixtures import saved_tiny_detector, tiny_detector, write_coco, write_images
from vlp.data.features import open_store


@pytest.fixture(scope="module")
def extractor():
    model, _ = tiny_detector(seed=1)
    return RegionExtractor(model, ExtractSettings(min_boxes=2, max_boxes=5))


@pytest.mark.parametrize("name", ["regions.lmdb", "regions.h5"])
def test_store_holds_one_record_per_image_keyed_by_stem(tmp_path, extractor, name):
    write_images(tmp_path / "images", 5, sizes=((64, 48), (50, 70)))
    items = from_directory(tmp_path / "images")
    out = tmp_path / name
    report = extract_regions(items, extractor, out, batch_size=2, workers=0, progress=False)
    assert (report.written, report.already, report.ok) == (5, 0, True)
    direct = extractor([_load(it.path) for it in items[:2]])
    with open_store(out) as store:
        assert sorted(store) == [f"img_{i:03d}" for i in range(5)]
        assert (store.feature_dim, store.num_classes) == (32, 4)
        rec = store["img_001"]
        assert (rec.image_w, rec.image_h) == (50, 70)
        assert rec.features.dtype == np.float16 and rec.boxes.dtype == np.float32
        np.testing.assert_allclose(rec.features, direct[1].features, rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(rec.boxes, direct[1].boxes, atol=1e-3)
    again = extract_regions(items, extractor, out, batch_size=2, workers=0, progress=False)
    assert (again.written, again.already) == (0, 5)


def _load(path):
    import torch

    from feature_extraction.images import decode_rgb
    return torch.from_numpy(decode_rgb(path)).permute(2, 0, 1).float() / 255


def test_given_boxes_mode_stores_the_coco_boxes(tmp_path):
    detector = saved_tiny_detector(tmp_path / "det")
    coco = write_coco(tmp_path / "instances.json", tmp_path / "images", 4)
    data = json.loads(coco.read_text())
    data["images"].append({"id": 99, "file_name": "scene_000.png", "width": 64, "height": 48})
    data["images"][-1]["file_name"] = "unboxed.png"
    (tmp_path / "images" / "unboxed.png").write_bytes((tmp_path / "images" /
                                                       "scene_000.png").read_bytes())
    coco.write_text(json.dumps(data))
    out = tmp_path / "given.lmdb"
    report = extract_images(detector=detector, out=out, images=tmp_path / "images",
                            boxes=coco, key="id", workers=0, progress=False)
    assert report.written == 4 and report.failed == {"no boxes in the COCO file": 1}
    with open_store(out) as store:
        assert sorted(store) == ["1", "2", "3", "4"]
        for image in data["images"][:4]:
            want = [[x, y, x + w, y + h] for a in data["annotations"]
                    if a["image_id"] == image["id"] for x, y, w, h in [a["bbox"]]]
            np.testing.assert_array_equal(store[str(image["id"])].boxes, want)
