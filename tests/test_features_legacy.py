"""Existing feature releases: VLP's sharded HDF5, BUTD TSV and per-image .npy, read in
place and converted by `vlp convert-features`. Fixtures are built in the exact layouts."""

import base64
import csv
import json

import h5py
import numpy as np
import pytest

from vlp.cli import main
from vlp.data.features import (MissingImageError, RecordError, StoreError, box_class_vector,
                               open_store)

D, C = 32, 7  # stand-ins for 2048 features and 1601 classes
VLP_IDS = ["COCO_val2014_000000391895", "COCO_val2014_000000000895",
           "COCO_train2014_000000000042", "COCO_val2014_000000000123"]


def regions(seed: int, n: int = 10, d: int = D, c: int = C):
    """features [n, d] float32, class probabilities [n, c], boxes [n, 6] as VLP's file."""
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(0, 300, n), rng.uniform(0, 200, n)
    boxes6 = np.stack([x1, y1, x1 + rng.uniform(5, 300, n), y1 + rng.uniform(5, 200, n),
                       rng.integers(1, c, n), rng.random(n)], 1).astype(np.float32)
    return (rng.standard_normal((n, d)).astype(np.float32),
            rng.dirichlet(np.ones(c), n).astype(np.float32), boxes6)


def write_vlp_release(root, images: dict, skip_bbox=()):
    """VLP's layout: <prefix>_feat<XYZ>.h5 / <prefix>_cls<XYZ>.h5 by the id's last three
    characters, one dataset per image, plus one merged [N, 6] box file."""
    prefix = root / "feat_cls_1000" / "coco_detection_vg_100dets_gvd_checkpoint_trainval"
    prefix.parent.mkdir(parents=True)
    bbox = root / "coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5"
    with h5py.File(bbox, "w") as boxes_file:
        for image_id, (feat, cls, boxes6) in images.items():
            with h5py.File(f"{prefix}_feat{image_id[-3:]}.h5", "a") as f:
                f[image_id] = feat
            with h5py.File(f"{prefix}_cls{image_id[-3:]}.h5", "a") as f:
                f[image_id] = cls
            if image_id not in skip_bbox:
                boxes_file[image_id] = boxes6
    return prefix, bbox


@pytest.fixture
def vlp_release(tmp_path):
    images = {key: regions(i) for i, key in enumerate(VLP_IDS)}
    prefix, bbox = write_vlp_release(tmp_path, images)
    return prefix, bbox, images


def b64(array) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def write_tsv(path, rows, fields=("image_id", "image_w", "image_h", "num_boxes", "boxes",
                                  "features")):
    """BUTD's generate_tsv.py layout: tab-separated, no header, base64 float32 arrays."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
        for row in rows:
            writer.writerow(row)


def butd_row(image_id, seed, n=36, d=2048, w=640, h=480):
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(0, w / 2, n), rng.uniform(0, h / 2, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 2 - 1, n),
                      y1 + rng.uniform(1, h / 2 - 1, n)], 1).astype(np.float32)
    feats = rng.random((n, d), np.float32) * 10
    return {"image_id": image_id, "image_w": w, "image_h": h, "num_boxes": n,
            "boxes": b64(boxes), "features": b64(feats)}, boxes, feats


def run_cli(argv, capsys):
    code = main(["convert-features", "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# -- VLP's sharded HDF5, in place -------------------------------------------------------

def test_vlp_release_reads_in_place(vlp_release):
    prefix, bbox, images = vlp_release
    store = open_store(prefix, bbox_file=bbox)
    assert sorted(store) == sorted(VLP_IDS) and len(store) == 4
    for key, (feat, cls, boxes6) in images.items():
        rec = store[key]
        # Read in place, a release keeps its dtype up to the model (VLP's COCO: float32).
        assert rec.features.dtype == feat.dtype == np.float32
        np.testing.assert_array_equal(rec.features, feat)
        np.testing.assert_array_equal(rec.cls_probs, cls)
        np.testing.assert_array_equal(rec.boxes, boxes6[:, :4])
        np.testing.assert_array_equal(rec.scores, boxes6[:, 5])
        assert rec.image_w is None
        assert box_class_vector(rec, box_norm="lazy").shape == (10, C + 6)
    assert "COCO_val2014_000000000124" not in store
    with pytest.raises(KeyError, match=f"'COCO_val2014_000000000124' is not in .*{prefix.name}"):
        store["COCO_val2014_000000000124"]


def test_vlp_release_through_a_descriptor(vlp_release, tmp_path):
    prefix, bbox, images = vlp_release
    descriptor = tmp_path / "coco_vlp.json"
    descriptor.write_text(json.dumps({"format": "vlp-h5",
                                      "path": str(prefix.relative_to(tmp_path)),
                                      "bbox_file": bbox.name}))
    store = open_store(descriptor)
    np.testing.assert_array_equal(store[VLP_IDS[2]].boxes, images[VLP_IDS[2]][2][:, :4])


def test_missing_shards_are_named_at_open(vlp_release):
    prefix, bbox, _ = vlp_release
    (prefix.parent / f"{prefix.name}_cls042.h5").unlink()
    with pytest.raises(StoreError, match=f"missing .*{prefix.name}_cls042.h5"):
        open_store(prefix, bbox_file=bbox)
    with pytest.raises(StoreError, match="need their merged box file"):
        open_store(prefix)


def test_vlp_reader_reports_bad_images(tmp_path):
    feat, cls, boxes6 = regions(0)
    images = {"img_nan001": (np.where(np.eye(10, D) > 0, np.nan, feat), cls, boxes6),
              "img_flip002": (feat, cls, boxes6[:, [2, 1, 0, 3, 4, 5]]),
              "img_nobox003": (feat, cls, boxes6),
              "img_ok004": (feat, cls, boxes6)}
    prefix, bbox = write_vlp_release(tmp_path, images, skip_bbox={"img_nobox003"})
    store = open_store(prefix, bbox_file=bbox)
    with pytest.raises(ValueError, match="image 'img_nan001' .*features contain NaN"):
        store["img_nan001"]
    with pytest.raises(ValueError, match="image 'img_flip002' .*box 0 has x2 < x1"):
        store["img_flip002"]
    with pytest.raises(MissingImageError, match="'img_nobox003' .*missing from .*trainvaltest"):
        store["img_nobox003"]
    assert store["img_ok004"].num_regions == 10


# -- per-image .npy ---------------------------------------------------------------------

@pytest.fixture
def npy_release(tmp_path):
    folder = tmp_path / "region_feat_gvd_wo_bgd" / "trainval"
    folder.mkdir(parents=True)
    bbox = tmp_path / "flickr30k_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5"
    images = {str(1000092795 + i): regions(10 + i) for i in range(3)}
    with h5py.File(bbox, "w") as f:
        for key, (feat, cls, boxes6) in images.items():
            np.save(folder / f"{key}.npy", feat)
            np.save(folder / f"{key}_cls_prob.npy", cls)
            f[key] = boxes6
    return folder.parent, bbox, images


def test_npy_folder_reads_in_place(npy_release):
    folder, bbox, images = npy_release
    store = open_store(folder, bbox_file=bbox)
    assert sorted(store) == sorted(images)
    feat, cls, boxes6 = images["1000092796"]
    rec = store[1000092796]
    assert rec.features.dtype == feat.dtype
    np.testing.assert_array_equal(rec.features, feat)
    np.testing.assert_array_equal(rec.cls_probs, cls)
    np.testing.assert_array_equal(rec.boxes, boxes6[:, :4])
    (folder / "trainval" / "1000092797_cls_prob.npy").unlink()
    with pytest.raises(RecordError, match="'1000092797': no class probabilities file"):
        store["1000092797"]


# -- BUTD TSV ---------------------------------------------------------------------------

def test_butd_tsv_rows_decode_to_records(tmp_path):
    from vlp.data.features.butd_tsv import read_butd_tsv

    rows = [butd_row(391895, 0), butd_row(42, 1)]
    path = tmp_path / "trainval_resnet101_faster_rcnn_genome_36.tsv"
    write_tsv(path, [r for r, _, _ in rows])
    got = {key: read() for key, read in read_butd_tsv(path)}
    assert list(got) == ["391895", "42"]
    rec = got["391895"]
    np.testing.assert_array_equal(rec.boxes, rows[0][1])
    np.testing.assert_array_equal(rec.features, rows[0][2])
    assert rec.boxes.dtype == rec.features.dtype == np.float32
    assert rec.features.shape == (36, 2048)
    # The TSV has no class probabilities and no scores: C = 0 and score 1, by contract.
    assert rec.cls_probs.shape == (36, 0) and (rec.scores == 1).all()
    assert (rec.image_w, rec.image_h) == (640, 480)
    assert box_class_vector(rec).shape == (36, 6)


def test_lxmert_columns_fill_in_scores(tmp_path):
    from vlp.data.features.butd_tsv import LXMERT_FIELDS, read_butd_tsv

    row, boxes, _ = butd_row("COCO_val2014_000000000042", 0, n=4, d=8)
    conf = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    lx = {"img_id": row["image_id"], "img_h": 480, "img_w": 640, "num_boxes": 4,
          "objects_id": b64(np.arange(4)), "objects_conf": b64(conf),
          "attrs_id": b64(np.arange(4)), "attrs_conf": b64(conf),
          "boxes": row["boxes"], "features": row["features"]}
    write_tsv(tmp_path / "lx.tsv", [lx], LXMERT_FIELDS)
    [(key, read)] = list(read_butd_tsv(tmp_path / "lx.tsv", "lxmert"))
    rec = read()
    assert key == "COCO_val2014_000000000042" and (rec.image_w, rec.image_h) == (640, 480)
    np.testing.assert_array_equal(rec.scores, conf)


def test_butd_tsv_bad_rows_name_the_image(tmp_path):
    from vlp.data.features.butd_tsv import read_butd_tsv

    good, _, _ = butd_row(1, 0, n=3, d=8)
    cut = dict(good, image_id=2, features=good["features"][:-8])
    short = {k: v for k, v in dict(good, image_id=3).items() if k != "features"}
    write_tsv(tmp_path / "f.tsv", [good, cut])
    with open(tmp_path / "f.tsv", "a") as f:
        f.write("\t".join(str(short[k]) for k in ("image_id", "image_w", "image_h",
                                                  "num_boxes", "boxes")) + "\n")
    reads = dict(read_butd_tsv(tmp_path / "f.tsv"))
    assert reads["1"]().num_regions == 3
    with pytest.raises(RecordError, match=r"image '2' \(.*f.tsv:2\): cannot decode"):
        reads["2"]()
    with pytest.raises(RecordError, match=r"image '3' .*5 tab-separated columns, 6"):
        reads["3"]()


# -- vlp convert-features ---------------------------------------------------------------

@pytest.mark.parametrize("to, out_name", [("lmdb", "coco.lmdb"), ("h5", "coco.h5")])
def test_convert_vlp_release_skips_bad_images_and_resumes(tmp_path, capsys, to, out_name):
    feat, cls, boxes6 = regions(0)
    images = {key: regions(i) for i, key in enumerate(VLP_IDS)}
    images["COCO_val2014_000000000777"] = (feat * np.inf, cls, boxes6)
    prefix, bbox = write_vlp_release(tmp_path, images)
    out = tmp_path / out_name
    argv = ["--from", "vlp-h5", "--bbox-file", bbox, "--to", to, "--out", out, prefix]
    code, stdout, stderr = run_cli(argv + ["--limit", "2"], capsys)
    assert code == 0 and "wrote 2 records" in stdout
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 0
    assert "skipped COCO_val2014_000000000777: image 'COCO_val2014_000000000777'" in stderr
    assert "wrote 2 records, 2 already there, 1 bad records skipped" in stdout
    store = open_store(out)
    assert sorted(store) == sorted(VLP_IDS)
    for key in VLP_IDS:
        rec, (feat, cls, boxes6) = store[key], images[key]
        np.testing.assert_array_equal(rec.features, feat.astype(np.float16))
        np.testing.assert_array_equal(rec.cls_probs, cls.astype(np.float16))
        np.testing.assert_array_equal(rec.boxes, boxes6[:, :4])
        assert rec.image_w is None


def test_convert_butd_tsv_to_hdf5(tmp_path, capsys):
    rows = [butd_row(i, i, n=10 + i, d=64) for i in range(3)]
    bad = dict(rows[1][0], image_id=99, num_boxes=7)
    write_tsv(tmp_path / "a.tsv", [rows[0][0], bad])
    write_tsv(tmp_path / "b.tsv", [r for r, _, _ in rows[1:]])
    out = tmp_path / "butd.h5"
    code, stdout, stderr = run_cli(["--from", "butd-tsv", "--to", "h5", "--out", out,
                                    tmp_path / "a.tsv", tmp_path / "b.tsv"], capsys)
    assert code == 0 and "wrote 3 records, 0 already there, 1 bad" in stdout
    assert "skipped 99: image '99'" in stderr and "cls_probs of width 0" in stderr
    store = open_store(out)
    assert sorted(store) == ["0", "1", "2"] and store.num_classes == 0
    np.testing.assert_array_equal(store["2"].features, rows[2][2].astype(np.float16))


def test_convert_npy_folder(npy_release, tmp_path, capsys):
    folder, bbox, images = npy_release
    out = tmp_path / "flickr.lmdb"
    code, stdout, _ = run_cli(["--from", "npy-dir", "--bbox-file", bbox, "--out", out,
                               folder], capsys)
    assert code == 0 and "wrote 3 records" in stdout
    store = open_store(out)
    np.testing.assert_array_equal(store["1000092795"].features,
                                  images["1000092795"][0].astype(np.float16))


@pytest.mark.parametrize("argv, message", [
    (["--from", "vlp-h5", "--out", "x.lmdb", "prefix"], "--from vlp-h5 needs --bbox-file"),
    (["--from", "vlp-h5", "--bbox-file", "b.h5", "--out", "x.lmdb", "nowhere/prefix"],
     "box file b.h5 does not exist"),
    (["--from", "butd-tsv", "--out", "x.lmdb", "missing.tsv"], "TSV file missing.tsv does not"),
    (["--from", "butd-tsv", "--tsv-fields", "image_id,boxes", "--out", "x.lmdb", "a.tsv"],
     "lack image_w, image_h, num_boxes, features"),
])
def test_convert_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(argv, capsys)
    assert code == 2 and message in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("vlp convert-features: error:")
