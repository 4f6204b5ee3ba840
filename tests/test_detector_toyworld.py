"""The main job's entry points on a small ToyWorld, in tiny mode."""

import pytest

from feature_extraction.toyworld import TOY_SETTINGS, extract_toyworld, train_toyworld_detector
from vlp.data.features import open_store
from vlp.data.toyworld import ToyWorldConfig, generate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyworld") / "tw"
    generate(root, ToyWorldConfig(images=12, pretrain_images=6, seed=1), progress=False)
    return root


def test_tiny_detector_then_every_image_extracted(world, tmp_path):
    trained = train_toyworld_detector(world, tmp_path / "detector", tiny=True)
    assert trained["checkpoint"] == str(tmp_path / "detector")
    for key in ("map50", "recall50", "seconds"):
        assert isinstance(trained[key], float)
    again = train_toyworld_detector(world, tmp_path / "detector", tiny=True)
    assert again["reused"] and again["map50"] == trained["map50"]

    result = extract_toyworld(world, tmp_path / "detector", tmp_path / "regions.lmdb",
                              tiny=True)
    stems = sorted(p.stem for p in (world / "images").iterdir())
    assert len(stems) == 18 and result["images"] == 18
    assert (result["feature_dim"], result["num_classes"]) == (256, 37)
    assert TOY_SETTINGS.min_boxes <= result["mean_boxes"] <= TOY_SETTINGS.max_boxes
    assert 0.0 <= result["scenes_matched"] <= 1.0
    with open_store(result["store"]) as store:
        assert sorted(store) == stems
        record = store[stems[0]]
        assert (record.image_w, record.image_h) == (128, 128)
    # Resuming a complete store writes nothing new.
    assert extract_toyworld(world, tmp_path / "detector", tmp_path / "regions.lmdb",
                            tiny=True)["images"] == 18
