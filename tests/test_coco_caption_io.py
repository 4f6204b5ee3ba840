"""Results/reference files, one-line errors, the CLI and the SPICE-missing path."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import warnings

import pytest

from coco_caption import SpiceUnavailable, evaluate
from coco_caption.io import pair, read_references
from vlp.errors import VLPError

COCO = {"images": [{"id": 1}, {"id": 2}, {"id": 3}], "annotations": [
    {"image_id": 1, "id": 1, "caption": "A dog on a couch."},
    {"image_id": 1, "id": 2, "caption": "A brown dog sleeping on a sofa"},
    {"image_id": 2, "id": 3, "caption": "Two men riding horses"},
    {"image_id": 3, "id": 4, "caption": "A café with naïve art"}]}
KARPATHY = {"images": [
    {"split": "test", "filename": "a.jpg", "cocoid": 1, "imgid": 0,
     "sentences": [{"raw": "A dog on a couch."}, {"raw": "A brown dog sleeping"}]},
    {"split": "test", "filename": "b.jpg", "imgid": "b7",
     "sentences": [{"raw": "Two men riding horses"}]},
    {"split": "train", "filename": "c.jpg", "cocoid": 3, "sentences": [{"raw": "x"}]}]}
RESULTS = [{"image_id": 1, "caption": "a dog on a sofa"},
           {"image_id": 2, "caption": "two men on horses"}]


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False),
                    encoding="utf-8")
    return str(path)


def test_both_reference_formats_are_read(tmp_path):
    coco = read_references(_write(tmp_path, "coco.json", COCO))
    assert coco["1"] == ["A dog on a couch.", "A brown dog sleeping on a sofa"]
    karpathy = read_references(_write(tmp_path, "k.json", KARPATHY), split="test")
    # cocoid when present, else imgid; other splits left out.
    assert karpathy == {"1": ["A dog on a couch.", "A brown dog sleeping"],
                        "b7": ["Two men riding horses"]}


def test_only_result_images_are_scored_and_ids_match_as_text(tmp_path):
    results = [{"image_id": "2", "caption": "two men"}, {"image_id": 1, "caption": "a dog"}]
    pairs = pair(results, _write(tmp_path, "coco.json", COCO))
    assert pairs.ids == ["2", 1]
    assert pairs.references == [["Two men riding horses"], COCO_REFS_1]


COCO_REFS_1 = ["A dog on a couch.", "A brown dog sleeping on a sofa"]


@pytest.mark.parametrize("results, refs, split, expected", [
    ("[]", COCO, None, ["res.json", "no results"]),
    ("[{\"image_id\": 1, \"caption\": \"a\"},", COCO, None, ["res.json", "not valid JSON",
                                                          "line 1"]),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 2}], COCO, None,
     ["res.json", "entry 1", "caption"]),
    ([{"image_id": 1, "caption": 7}], COCO, None, ["res.json", "entry 0", "string"]),
    ([{"image_id": None, "caption": "a"}], COCO, None, ["res.json", "entry 0", "image id"]),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], COCO, None,
     ["res.json", "entry 1", "twice"]),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 9, "caption": "b"},
      {"image_id": 8, "caption": "c"}], COCO, None, ["res.json", "2 result image id",
                                                     "refs.json", "first: 9"]),
    (RESULTS, {"annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 2}]}, None,
     ["refs.json", "annotations[1]"]),
    (RESULTS, {"annotations": []}, None, ["refs.json", "annotations"]),
    (RESULTS, {"foo": 1}, None, ["refs.json", "Karpathy"]),
    (RESULTS, KARPATHY, None, ["refs.json", "--split"]),
    (RESULTS, KARPATHY, "val", ["refs.json", "'val'", "test, train"]),
    (RESULTS, {"images": [{"split": "test", "cocoid": 1, "sentences": [{"tokens": []}]}]},
     "test", ["refs.json", "images[0].sentences[0]", "raw"]),
    (RESULTS, "", None, ["refs.json", "not valid JSON"]),
])
def test_bad_files_give_one_line_errors_naming_file_and_entry(tmp_path, results, refs,
                                                              split, expected):
    res_path = _write(tmp_path, "res.json", results)
    ref_path = _write(tmp_path, "refs.json", refs)
    with pytest.raises(VLPError) as err:
        evaluate(res_path, ref_path, split=split, java=False)
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message


def test_unknown_or_java_only_metrics_are_refused(tmp_path):
    res, refs = _write(tmp_path, "res.json", RESULTS), _write(tmp_path, "refs.json", COCO)
    with pytest.raises(VLPError, match="unknown metric 'BLUE'"):
        evaluate(res, refs, metrics=["BLUE"], java=False)
    with pytest.raises(VLPError, match="METEOR needs Java"):
        evaluate(res, refs, metrics=["METEOR"], java=False)


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.usefixtures("java")
def test_missing_spice_jars_warn_once_and_other_metrics_still_come(tmp_path, monkeypatch):
    from coco_caption import java
    _no_network(monkeypatch)
    monkeypatch.setattr(java, "spice_missing", lambda: "needs stanford-corenlp-3.6.0.jar")
    res, refs = _write(tmp_path, "res.json", RESULTS), _write(tmp_path, "refs.json", COCO)
    with pytest.warns(SpiceUnavailable, match="SPICE skipped") as caught:
        scores = evaluate(res, refs, metrics=["CIDEr", "SPICE"])
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert set(scores) == {"CIDEr"}


@pytest.mark.usefixtures("java")
def test_cli_prints_a_table_and_writes_files(tmp_path):
    results = [RESULTS[0], {"image_id": "b7", "caption": "Two men on horses, naïve"}]
    res, refs = _write(tmp_path, "res.json", results), _write(tmp_path, "refs.json", KARPATHY)
    out, per_image = tmp_path / "m.json", tmp_path / "pi.json"
    proc = subprocess.run([sys.executable, "-m", "coco_caption", res, refs, "--split", "test",
                           "--metrics", "BLEU", "CIDEr", "SPICE", "--out", str(out),
                           "--per-image", str(per_image)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "CIDEr" in proc.stdout and "Bleu_4" in proc.stdout
    metrics = json.loads(out.read_text())
    assert set(metrics) - {"SPICE"} == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"}
    assert [p["image_id"] for p in json.loads(per_image.read_text())] == [1, "b7"]
    if "SPICE" not in metrics:  # no CoreNLP jars here: one warning line, nothing else
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "warning: SPICE skipped" in lines[0], proc.stderr


def test_cli_errors_are_one_line_with_status_2(tmp_path):
    res = _write(tmp_path, "res.json", [{"image_id": 1}])
    refs = _write(tmp_path, "refs.json", COCO)
    proc = subprocess.run([sys.executable, "-m", "coco_caption", res, refs, "--no-java"],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "res.json: entry 0" in lines[0] and "Traceback" not in proc.stderr


def test_no_java_needs_no_java(tmp_path, monkeypatch):
    from coco_caption import java
    _no_network(monkeypatch)
    monkeypatch.setattr(java, "java", lambda: pytest.fail("Java was started"))
    res, refs = _write(tmp_path, "res.json", RESULTS), _write(tmp_path, "refs.json", COCO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = evaluate(res, refs, java=False)
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
