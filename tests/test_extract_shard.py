"""--shard I/N splits the list exactly; merge-stores joins the shards into one store."""

import numpy as np
import pytest

from feature_extraction import (ExtractSettings, RegionExtractor, extract_regions,
                                from_directory, shard)
from feature_extraction.images import ImageItem, parse_shard
from feature_extraction.merge import merge_stores
from extract_fixtures import tiny_detector, write_images
from vlp.data.features import RegionRecord, create_store, open_store
from vlp.errors import VLPError


def test_shards_partition_the_list():
    items = [ImageItem(f"id{i}", f"{i}.jpg") for i in range(200)]
    parts = [shard(items, i, 3) for i in range(3)]
    keys = [it.key for part in parts for it in part]
    assert sorted(keys) == sorted(it.key for it in items)
    assert all(40 < len(part) < 90 for part in parts)
    # A shard's images do not depend on the rest of the list.
    assert [it.key for it in shard(items[:50], 1, 3)] == \
        [it.key for it in parts[1] if int(it.key[2:]) < 50]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(VLPError, match="--shard"):
            parse_shard(bad)


def test_merged_shards_equal_one_run(tmp_path):
    write_images(tmp_path / "images", 9)
    items = from_directory(tmp_path / "images")
    model, _ = tiny_detector(seed=2)
    extractor = RegionExtractor(model, ExtractSettings(min_boxes=1, max_boxes=4))
    # One image per batch: records do not depend on how the list was split.
    run = dict(batch_size=1, workers=0, progress=False)
    extract_regions(items, extractor, tmp_path / "all.lmdb", **run)
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}.lmdb")
        extract_regions(shard(items, i, 3), extractor, parts[-1], **run)
    report = merge_stores(tmp_path / "merged.h5", parts, progress=False)
    assert (report.copied, report.present) == (9, 0)
    with open_store(tmp_path / "all.lmdb") as a, open_store(tmp_path / "merged.h5") as b:
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key].features, b[key].features)
            np.testing.assert_array_equal(a[key].boxes, b[key].boxes)
    again = merge_stores(tmp_path / "merged.h5", parts, progress=False)
    assert (again.copied, again.present) == (0, 9)


def _record(value: float) -> RegionRecord:
    return RegionRecord(boxes=np.array([[0, 0, 5, 5]], np.float32),
                        features=np.full((1, 3), value), cls_probs=np.full((1, 2), 0.5),
                        scores=np.ones(1), image_w=10, image_h=10)


def test_merge_refuses_one_id_with_two_different_records(tmp_path):
    for name, value in (("a.lmdb", 1.0), ("b.lmdb", 1.0), ("c.lmdb", 2.0)):
        with create_store(tmp_path / name) as w:
            w.put("x", _record(value))
    report = merge_stores(tmp_path / "ab.lmdb", [tmp_path / "a.lmdb", tmp_path / "b.lmdb"],
                          progress=False)
    assert (report.copied, report.present) == (1, 1)
    with pytest.raises(VLPError, match="'x' is in .*a.lmdb and in .*c.lmdb"):
        merge_stores(tmp_path / "ac.lmdb", [tmp_path / "a.lmdb", tmp_path / "c.lmdb"],
                     progress=False)


def test_merge_stores_command(tmp_path, capsys):
    from vlp.cli import merge_stores as command
    from vlp.cli.args import ArgumentParser

    for i in range(2):
        with create_store(tmp_path / f"p{i}.lmdb") as w:
            w.put(f"id{i}", _record(float(i)))
        (tmp_path / f"p{i}.lmdb.errors.jsonl").write_text(
            f'{{"image_id": "bad{i}", "path": "x", "reason": "missing file"}}\n')
    parser = ArgumentParser(prog="vlp")
    command.register(parser.add_subparsers())
    args = parser.parse_args(["merge-stores", str(tmp_path / "all.h5"),
                              str(tmp_path / "p0.lmdb"), str(tmp_path / "p1.lmdb"), "--quiet"])
    assert args.run(args) == 0
    assert "2 records copied from 2 stores" in capsys.readouterr().out
    with open_store(tmp_path / "all.h5") as merged:
        assert sorted(merged) == ["id0", "id1"]
    assert len((tmp_path / "all.h5.errors.jsonl").read_text().splitlines()) == 2
