"""Unusable images are skipped with a reason; convertible ones are converted."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from feature_extraction.commands import extract_images
from feature_extraction.images import BadImage, decode_rgb
from extract_fixtures import saved_tiny_detector, scene
from vlp.data.features import open_store

SKIPPED = {
    "empty": "empty file (0 bytes)",
    "truncated": "cannot decode",
    "text": "not an image file",
    "one_pixel": "too small",
    "bomb": "decompression-bomb limit",
    "missing": "missing file",
}
CONVERTED = ("cmyk", "gray16", "gray", "rgba", "palette", "good")


def _bomb_png(path, side=20000):
    """A valid tiny PNG whose header claims side x side pixels."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[16:29])  # width, height, depth, color, ...
    ihdr[0:8] = struct.pack(">II", side, side)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    path.write_bytes(bytes(data))


def write_corpus(d):
    d.mkdir()
    pixels = scene(0)[0]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(noise).save(d / "full.jpg", quality=95)
    raw = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (d / "full.jpg").unlink()
    (d / "text.jpg").write_text("this is not a picture\n")
    Image.fromarray(pixels).convert("CMYK").save(d / "cmyk.jpg")
    gray16 = (pixels[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(d / "gray16.png")
    Image.fromarray(pixels).convert("L").save(d / "gray.png")
    Image.fromarray(pixels).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(pixels).convert("P").save(d / "palette.png")
    Image.fromarray(pixels).save(d / "good.png")
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png")
    _bomb_png(d / "bomb.png")
    names = [p.name for p in sorted(d.iterdir())] + ["missing.jpg"]
    (d / "list.txt").write_text("\n".join(names) + "\n")
    return d / "list.txt"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return saved_tiny_detector(tmp_path_factory.mktemp("det"))


def test_each_bad_file_is_skipped_with_its_reason(tmp_path, detector):
    listing = write_corpus(tmp_path / "corpus")
    out = tmp_path / "regions.lmdb"
    report = extract_images(detector=detector, out=out, image_list=listing, min_boxes=2,
                            max_boxes=4, batch_size=3, workers=1, progress=False)
    assert report.ok and report.written == len(CONVERTED)
    assert sum(report.failed.values()) == len(SKIPPED)
    errors = [json.loads(line) for line in open(report.errors_file)]
    reasons = {e["image_id"]: e["reason"] for e in errors}
    assert set(reasons) == set(SKIPPED)
    for key, expected in SKIPPED.items():
        assert expected in reasons[key], (key, reasons[key])
    with open_store(out) as store:
        assert sorted(store) == sorted(CONVERTED)
        assert (store["gray16"].image_w, store["gray16"].image_h) == (64, 48)
    # Run again: the store is complete, the skipped files are retried and listed again.
    again = extract_images(detector=detector, out=out, image_list=listing, min_boxes=2,
                           max_boxes=4, workers=0, progress=False)
    assert again.written == 0 and again.already == len(CONVERTED)
    assert len(open(again.errors_file).readlines()) == len(SKIPPED)


def test_conversions_keep_the_picture():
    pixels = scene(1)[0]
    assert decode_rgb  # imported API
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        Image.fromarray(pixels[:, :, 0].astype(np.uint16) * 257).save(p / "g16.png")
        got = decode_rgb(p / "g16.png")
        assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
        np.testing.assert_array_equal(got[:, :, 1], pixels[:, :, 0])
        Image.fromarray(np.dstack([pixels, np.zeros((48, 64), np.uint8)])).save(p / "a.png")
        np.testing.assert_array_equal(decode_rgb(p / "a.png"), pixels)  # alpha dropped
        with pytest.raises(BadImage, match="decompression-bomb"):
            decode_rgb(p / "a.png", max_pixels=100)


def test_exit_status_is_nonzero_only_when_nothing_succeeded(tmp_path, detector):
    from vlp.cli import extract
    from vlp.cli.args import ArgumentParser

    parser = ArgumentParser(prog="vlp")
    extract.register(parser.add_subparsers())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    (bad / "b.jpg").write_text("text")
    args = parser.parse_args(["extract", "--images", str(bad), "--detector", str(detector),
                              "--out", str(tmp_path / "none.lmdb"), "--workers", "0",
                              "--quiet"])
    assert args.run(args) == 1
    Image.fromarray(scene(2)[0]).save(bad / "c.png")
    args = parser.parse_args(["extract", "--images", str(bad), "--detector", str(detector),
                              "--out", str(tmp_path / "some.lmdb"), "--workers", "0",
                              "--quiet", "--min-boxes", "1", "--max-boxes", "3"])
    assert args.run(args) == 0
    # Rerun on the same folder: the good image is stored already, the broken ones fail
    # again. The extraction is complete, so it exits 0 and names what it skipped.
    assert args.run(args) == 0


def test_a_completed_extraction_rerun_exits_0_and_names_its_skips(tmp_path, detector, capsys):
    from vlp.cli import main

    listing = write_corpus(tmp_path / "corpus")
    argv = ["extract", "--image-list", str(listing), "--detector", str(detector),
            "--out", str(tmp_path / "regions.lmdb"), "--workers", "0", "--quiet",
            "--min-boxes", "2", "--max-boxes", "4"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"0 written, {len(CONVERTED)} already there, {len(SKIPPED)} skipped" in out
    assert "decompression-bomb limit" in out and "missing file" in out
