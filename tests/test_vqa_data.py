"""VQA readers: the official JSON pair and Pythia's imdb .npy give the same examples; bad
input is named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from vlp.data.vqa import VQAExample, read_imdb, read_vqa, read_vqa_json
from vlp.errors import VLPError


def _question(qid, image_id=9):
    return {"image_id": image_id, "question": f"What is {qid}?", "question_id": qid}


def _annotation(qid, answers, image_id=9):
    return {"question_id": qid, "image_id": image_id, "question_type": "what is",
            "answer_type": "other", "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def pair(tmp_path):
    qs = _write(tmp_path / "q.json", {"questions": [_question(2), _question(1, 4)]})
    anns = _write(tmp_path / "a.json", {"annotations": [
        _annotation(1, ["cat"] * 10, 4), _annotation(2, ["yes"] * 9 + ["no"])]})
    return qs, anns


def test_official_json(pair):
    qs, anns = pair
    examples = read_vqa(qs, anns)
    assert [e.question_id for e in examples] == [2, 1]  # the questions file's order
    e = examples[0]
    assert e == VQAExample(2, 9, "What is 2?", tuple(["yes"] * 9 + ["no"]), "what is",
                           "other", "yes", tuple(range(1, 11)), ("yes",) * 10)
    assert [x.question_id for x in read_vqa_json(qs, anns, annotation_order=True)] == [1, 2]
    test_split = read_vqa(qs)
    assert [x.answers for x in test_split] == [None, None]


def test_imdb_matches_json(tmp_path, pair):
    qs, anns = pair
    header = {"create_time": "2018", "dataset_name": "vqa", "has_answer": True}
    entries = [header] + [
        {"image_name": f"COCO_val2014_{e.image_id:012d}", "image_id": np.int64(e.image_id),
         "question_id": np.int64(e.question_id), "question_str": e.question,
         "question_tokens": e.question.lower().split(), "answers": list(e.answers)}
        for e in read_vqa(qs, anns)]
    path = tmp_path / "imdb_val2014.npy"
    np.save(path, np.array(entries, dtype=object))
    imdb = read_vqa(path)
    assert [(e.question_id, e.image_id, e.question, e.answers) for e in imdb] == \
        [(e.question_id, e.image_id, e.question, e.answers) for e in read_vqa(qs, anns)]
    assert imdb[0].image_name == "COCO_val2014_000000000009"
    # a test imdb: no answers, image id taken from the image name when absent
    np.save(path, np.array([header, {"image_name": "COCO_test2015_000000000077",
                                     "question_id": 5, "question_str": "Why?"}], dtype=object))
    (e,) = read_imdb(path)
    assert (e.image_id, e.answers) == (77, None)
    with pytest.raises(VLPError, match=r"missing for 1 ids: \[5\]"):
        read_imdb(path, require_answers=True)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_imdb_refuses_code_and_non_imdb(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{}, {"question_id": 1, "question_str": _Payload()}],
                           dtype=object))
    with pytest.raises(VLPError, match="evil.npy.*system is not allowed"):
        read_imdb(path)
    np.save(path, np.zeros(3))
    with pytest.raises(VLPError, match="object array"):
        read_imdb(path)
    path.write_text("not numpy")
    with pytest.raises(VLPError, match="not a .npy"):
        read_imdb(path)


def test_training_split_without_annotations_names_ids(tmp_path):
    qs = _write(tmp_path / "q.json", {"questions": [_question(q) for q in range(100, 115)]})
    anns = _write(tmp_path / "a.json", {"annotations": [_annotation(100, ["x"] * 10),
                                                        _annotation(101, ["y"] * 10)]})
    with pytest.raises(VLPError, match=r"a\.json: no annotation for questions of .*q\.json, "
                                       r"13 ids: \[102, 103, 104, 105, 106, 107, 108, 109, "
                                       r"110, 111, \.\.\.\]"):
        read_vqa(qs, anns, require_answers=True)
    with pytest.raises(VLPError, match="training needs the annotations"):
        read_vqa(qs, require_answers=True)
    orphan = _write(tmp_path / "a2.json", {"annotations": [_annotation(q, ["x"] * 10)
                                                           for q in range(100, 116)]})
    with pytest.raises(VLPError, match=r"not in .*q\.json, 1 ids: \[115\]"):
        read_vqa(qs, orphan)


@pytest.mark.parametrize("text, message", [
    ("{\"questions\": [", "bad.json: not valid JSON"),
    ("[]", "bad.json: a VQA questions file needs a list of objects under 'questions'"),
    ('{"questions": [{"question": "x", "image_id": 1}]}', "bad.json: entry 0 has no "
                                                          "'question_id'"),
    ('{"questions": [{"question_id": "7", "question": "x", "image_id": 1}]}',
     "question_id='7'"),
    ('{"questions": [{"question_id": 7, "question": "x", "image_id": 1},'
     ' {"question_id": 7, "question": "y", "image_id": 1}]}', r"more than once, 1 ids: \[7\]"),
])
def test_malformed_questions_name_the_file(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(VLPError, match=message):
        read_vqa(bad)


def test_malformed_annotations_name_the_file(tmp_path, pair):
    qs, _ = pair
    bad = tmp_path / "ann.json"
    bad.write_text('{"annotations": [{"question_id": 1, "question_type": "a", '
                   '"answer_type": "b", "answers": []}]}')
    with pytest.raises(VLPError, match="ann.json: question 1 needs a non-empty list"):
        read_vqa(qs, bad)
    with pytest.raises(VLPError, match="no such questions file"):
        read_vqa(tmp_path / "nowhere.json")
