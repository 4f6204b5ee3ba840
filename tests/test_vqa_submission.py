"""Leaderboard files: writing one for a split, and the validator catching each defect."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vlp.cli import validate_vqa_submission
from vlp.cli.args import ArgumentParser
from vlp.errors import VLPError
from vlp.eval.vqa_submission import check_submission, submission_name, write_submission

IDS = list(range(1000, 1012))


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    path.write_text(json.dumps({"questions": [
        {"image_id": 1, "question": "?", "question_id": q} for q in IDS]}))
    return path


def _cli(argv):
    parser = ArgumentParser(prog="vlp")
    validate_vqa_submission.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate-vqa-submission", *map(str, argv)])
    return args.run(args)


def test_write_then_validate(tmp_path, questions, capsys):
    out = tmp_path / submission_name("test-dev2015", "vlp")
    assert out.name == "vqa_OpenEnded_mscoco_test-dev2015_vlp_results.json"
    answers = {q: "yes" for q in reversed(IDS)}
    assert write_submission(answers, questions, out) == len(IDS)
    rows = json.loads(out.read_text())
    assert [r["question_id"] for r in rows] == IDS  # the questions file's order
    assert check_submission(out, questions) == ([], len(IDS))
    assert _cli([out, questions]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("OK") and "all 12 questions" in printed


def test_imdb_questions_as_vlp_evaluated_test2015(tmp_path, capsys):
    """VLP answered test2015 from Pythia's imdb .npy; the same file names the questions."""
    imdb = tmp_path / "imdb_test-dev2015.npy"
    entries = [{"image_name": f"COCO_test2015_{q:012d}", "question_id": q,
                "question_str": "What?"} for q in IDS]
    np.save(imdb, np.array([{"dataset_name": "vqa"}, *entries], dtype=object))
    out = tmp_path / submission_name("test-dev2015", "vlp")
    assert write_submission({q: "two" for q in IDS}, imdb, out) == len(IDS)
    assert _cli([out, imdb]) == 0
    out.write_text(json.dumps(_rows()[:-1]))
    assert check_submission(out, imdb) == (
        [f"questions of {imdb} without an answer, 1 ids: [1011]"], len(IDS) - 1)


def test_write_refuses_gaps_extras_and_empty(tmp_path, questions):
    out = tmp_path / "r.json"
    with pytest.raises(VLPError, match=r"no answer for questions .*1 ids: \[1011\]"):
        write_submission({q: "no" for q in IDS[:-1]}, questions, out)
    with pytest.raises(VLPError, match=r"not in .*1 ids: \[5\]"):
        write_submission({**{q: "no" for q in IDS}, 5: "x"}, questions, out)
    with pytest.raises(VLPError, match=r"empty .*1 ids: \[1000\]"):
        write_submission({**{q: "no" for q in IDS}, 1000: " "}, IDS, out)
    assert not out.exists()


def _rows():
    return [{"question_id": q, "answer": "yes"} for q in IDS]


@pytest.mark.parametrize("content, expected", [
    ("[{", ["not valid JSON"]),
    (json.dumps({"results": _rows()}), ["must be a JSON list", "not a JSON dict"]),
    (json.dumps(_rows()[:-2]), ["without an answer, 2 ids: [1010, 1011]"]),
    (json.dumps(_rows() + [{"question_id": 7, "answer": "x"}]), ["not in", "1 ids: [7]"]),
    (json.dumps(_rows() + _rows()[:1]), ["more than once, 1 ids: [1000]"]),
    (json.dumps(_rows()[:-1] + [{"question_id": 1011, "answer": ""}]),
     ["empty or not strings, 1 ids: [1011]"]),
    (json.dumps(_rows()[:-1] + [{"question_id": 1011, "answer": None}]),
     ["empty or not strings, 1 ids: [1011]"]),
    (json.dumps(_rows()[:-1] + [{"question_id": "1011", "answer": "x"}]),
     ["not integers: indexes 1 ids: [11]", "without an answer, 1 ids: [1011]"]),
    (json.dumps(_rows()[:-1] + [{"id": 1011, "answer": "x"}, 3]),
     ["2 entries are not objects", "without an answer, 1 ids: [1011]"]),
])
def test_validator_names_each_defect(tmp_path, questions, capsys, content, expected):
    res = tmp_path / "res.json"
    res.write_text(content)
    defects, _ = check_submission(res, questions)
    text = "\n".join(defects)
    for piece in expected:
        assert piece in text
    assert _cli([res, questions]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == len(defects)  # one line per kind of defect


def test_several_defects_at_once(tmp_path, questions):
    rows = _rows()[2:] + _rows()[2:3] + [{"question_id": 99, "answer": ""}]
    res = tmp_path / "res.json"
    res.write_text(json.dumps(rows))
    defects, count = check_submission(res, questions)
    assert count == len(rows)
    assert len(defects) == 4  # repeated, extra, missing, empty


def test_subprocess_exit_status(tmp_path, questions):
    res = tmp_path / "res.json"
    res.write_text(json.dumps(_rows()[1:]))
    code = ("import sys; from vlp.cli import validate_vqa_submission as m; "
            "from vlp.cli.args import ArgumentParser; p = ArgumentParser(prog='vlp'); "
            "m.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); "
            "sys.exit(a.run(a))")
    proc = subprocess.run([sys.executable, "-c", code, "validate-vqa-submission", str(res),
                           str(questions)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "without an answer, 1 ids: [1000]" in proc.stderr
