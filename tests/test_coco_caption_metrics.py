"""BLEU, ROUGE-L and CIDEr-D in Python against pycocoevalcap; both backends end to end."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from coco_caption import cider_d, corpus_cider_d, document_frequency, evaluate
from coco_caption.scorers import bleu, lcs_length, rouge_l

needs_java = pytest.mark.usefixtures("java")
WORDS = "a the man dog cat on of in with red blue two sitting standing table near".split()


def _tokens(rng, lo=0, hi=14):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _corpus(seed, images=200):
    rng = random.Random(seed)
    refs = [[_tokens(rng) for _ in range(rng.randint(1, 6))] for _ in range(images)]
    cands = [_tokens(rng) for _ in range(images)]
    return cands, refs


def _dicts(cands, refs):
    return {i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}


@pytest.mark.parametrize("seed", [0, 1])
def test_cider_d_per_image_equals_pycocoevalcap(seed):
    cands, refs = _corpus(seed)
    theirs_mean, theirs = Cider().compute_score(*_dicts(cands, refs))
    mean, ours = corpus_cider_d(cands, refs)
    assert np.abs(ours - theirs).max() <= 1e-9 and abs(mean - theirs_mean) <= 1e-9


def test_cider_d_with_document_frequencies_built_once():
    cands, refs = _corpus(3)
    df = document_frequency(refs)
    _, whole = corpus_cider_d(cands, refs)
    # Scoring a slice against the corpus' frequencies, as an SCST reward does.
    part = cider_d(cands[50:60], refs[50:60], df)
    assert np.allclose(part, whole[50:60], atol=1e-12)
    as_lists = cider_d([c.split() for c in cands[:10]], [[r.split() for r in rs]
                                                          for rs in refs[:10]], df)
    assert np.allclose(as_lists, whole[:10], atol=1e-12)
    assert cider_d([refs[0][0]], [refs[0]], df)[0] > cider_d(["zebra zebra"], [refs[0]], df)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_bleu_and_rouge_equal_pycocoevalcap(seed):
    cands, refs = _corpus(seed)
    gts, res = _dicts(cands, refs)
    theirs, theirs_each = Bleu(4).compute_score(gts, res, verbose=0)
    ours, ours_each = bleu(cands, refs)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-12)
    assert np.allclose(ours_each, np.array(theirs_each).T, rtol=0, atol=1e-12)
    r_mean, r_each = Rouge().compute_score(gts, res)
    o_mean, o_each = rouge_l(cands, refs)
    assert np.allclose(o_each, r_each, rtol=0, atol=1e-12) and abs(o_mean - r_mean) < 1e-12


def test_lcs_length_by_hand():
    assert lcs_length("a b c d".split(), "b d".split()) == 2
    assert lcs_length("a b a b".split(), "b a b a".split()) == 3
    assert lcs_length([], ["a"]) == 0


def _coco_files(tmp_path, seed=5, images=60):
    import json
    rng = random.Random(seed)
    extras = ["man's", "it's", "don't", "3-year-old", "café", "naïve", "Zürich", ",", ".",
              "(", ")", '"', "1,000", "U.S.", "Mr.", "'90s", "½", "北京", "—"]

    def caption():
        words = [rng.choice(extras) if rng.random() < 0.2 else rng.choice(WORDS)
                 for _ in range(rng.randint(2, 12))]
        s = " ".join(words)
        return s[0].upper() + s[1:] + rng.choice(["", "."])

    anns = [{"image_id": i, "id": 10 * i + j, "caption": caption()}
            for i in range(images) for j in range(rng.randint(1, 5))]
    results = [{"image_id": i, "caption": caption()} for i in range(0, images, 2)]
    (tmp_path / "refs.json").write_text(json.dumps({"images": [], "annotations": anns}))
    (tmp_path / "res.json").write_text(json.dumps(results, ensure_ascii=False))
    return str(tmp_path / "res.json"), str(tmp_path / "refs.json")


@needs_java
def test_both_backends_agree_end_to_end(tmp_path):
    res, refs = _coco_files(tmp_path)
    metrics = ["BLEU", "ROUGE_L", "CIDEr"]
    java = evaluate(res, refs, metrics=metrics, per_image=True)
    python = evaluate(res, refs, metrics=metrics, java=False, per_image=True)
    assert java.keys() == python.keys()
    for key in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]:
        assert abs(java[key] - python[key]) < 1e-9, key
        diff = max(abs(a[key] - b[key]) for a, b in zip(java["per_image"],
                                                       python["per_image"]))
        assert diff <= 1e-6, (key, diff)
    assert [p["image_id"] for p in java["per_image"]] == list(range(0, 60, 2))
    assert java["CIDEr"] > 0


@needs_java
def test_meteor_runs_on_non_ascii_captions(tmp_path):
    res, refs = _coco_files(tmp_path, images=10)
    scores = evaluate(res, refs, metrics=["METEOR"], per_image=True)
    assert 0 < scores["METEOR"] < 1
    assert len(scores["per_image"]) == 5
    assert all(0 <= p["METEOR"] <= 1 for p in scores["per_image"])


@needs_java
def test_agreement_tool_on_synthetic_captions(capsys):
    from coco_caption.agreement import main
    assert main(["--synthetic", "150"]) == 0
    out = capsys.readouterr().out
    assert "150 images" in out and "CIDEr" in out
