"""Answer normalisation, soft scores, the answer vocabulary and soft targets."""

from __future__ import annotations

import json

import pytest

from vlp.errors import VLPError
from vlp.eval.vqa_answers import (
    CONTRACTIONS, AnswerVocab, build_targets, build_vocab, canonical_words,
    normalize_answer, soft_score, soft_scores, soft_targets, strip_punctuation,
)


@pytest.mark.parametrize("raw, expected", [
    ("yes.", "yes"),                 # a period not followed by a digit goes
    ("Yes", "yes"),                  # lower-cased
    ("  yes\n", "yes"),              # newline/tab -> space, then stripped
    ("yes\tsir", "yes sir"),
    ("two", "2"), ("Ten", "10"), ("none", "0"), ("eleven", "eleven"),
    ("a dog", "dog"), ("the man and a dog", "man and dog"), ("an", ""),
    ("dont", "don't"), ("don't", "don't"),  # the apostrophe is not punctuation
    ("Im", "im"),                    # the table's key "Im" never matches lower case
    ("somebody'd", "somebodyd"),     # the table's own oddity
    ("3.5", "3.5"), ("3.", "3"), ("mr. t", "mr t"),
    ("1,000", "1000"),               # comma between digits: every mark deleted
    ("red,white", "red white"),      # no space next to it: the mark becomes a space
    ("red, white", "red white"),     # next to a space: deleted
    ("t-shirt", "t shirt"), ("what?!", "what"), ("left/right", "left right"),
    ("1,000 (approx)", "1000 approx"),  # the digit comma deletes the brackets too
    ("12:30", "12:30"),              # ':' is not in the list
    ("a b  c", "b c"),               # words re-joined with single spaces
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_at_most_32_periods_go():
    # re.UNICODE (32) sits where re.sub takes its count in the official call.
    assert strip_punctuation("." * 40) == "." * 8
    assert strip_punctuation("a." * 33) == "a" * 32 + "a."


def test_ground_truth_processing_keeps_case_and_spaces():
    # Ground truth answers only get strip_punctuation: no lower-casing, no re-joining.
    assert strip_punctuation("Two - Three") == "Two  Three"
    assert canonical_words("Two  Three") == "2 3"


def test_contraction_table():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert CONTRACTIONS["twas"] == "'twas"


def test_soft_score_by_hand():
    # 10 answers, c of them the candidate. Leaving out one of the c matches leaves c-1
    # matches, leaving out one of the 10-c others leaves c; each subset scores min(1, m/3).
    assert soft_score(0, 10) == 0
    # c=1: 1 subset with 0 matches + 9 subsets with 1/3 -> 3/10
    assert soft_score(1, 10) == pytest.approx(0.3)
    # c=2: 2 x 1/3 + 8 x 2/3 = 2/3 + 16/3 = 6 -> 6/10
    assert soft_score(2, 10) == pytest.approx(0.6)
    # c=3: 3 x 2/3 + 7 x 1 = 9 -> 9/10
    assert soft_score(3, 10) == pytest.approx(0.9)
    # c=4: 4 x 1 + 6 x 1 -> 1
    assert soft_score(4, 10) == 1 and soft_score(10, 10) == 1
    # 3 answers (short lists occur in some imdbs), c=1: 1 x 0 + 2 x 1/3 -> 2/9
    assert soft_score(1, 3) == pytest.approx(2 / 9)


def test_soft_scores_match_brute_force():
    answers = ["cat"] * 3 + ["dog"] * 2 + ["bird"] * 4 + ["fish"]
    brute = {}
    for a in set(answers):
        subsets = [answers[:i] + answers[i + 1:] for i in range(len(answers))]
        brute[a] = sum(min(1, s.count(a) / 3) for s in subsets) / len(subsets)
    assert soft_scores(answers) == pytest.approx(brute)
    # By hand: cat 0.9, dog 0.6, bird 1.0, fish 0.3
    assert soft_scores(answers) == pytest.approx({"cat": 0.9, "dog": 0.6, "bird": 1.0,
                                                  "fish": 0.3})


def test_vocab_most_frequent_with_deterministic_ties(tmp_path):
    lists = [["Yes"] * 6 + ["no"] * 4, ["two", "2", "2", "cat"] + ["dog"] * 6,
             ["Cat."] * 3 + ["bird"] * 7]
    # counts after normalisation: yes 6, no 4, 2 3, cat 4, dog 6, bird 7
    vocab = build_vocab(lists, size=4)
    assert vocab.answers == ["bird", "dog", "yes", "cat"]  # dog/yes tie, cat/no tie: A-Z
    assert build_vocab(reversed(lists), size=4).answers == vocab.answers
    assert build_vocab(lists, size=100, min_count=4).answers == ["bird", "dog", "yes",
                                                                 "cat", "no"]
    path = tmp_path / "answers.json"
    vocab.save(path)
    assert json.loads(path.read_text()) == {"answers": vocab.answers}
    assert AnswerVocab.load(path).answers == vocab.answers
    txt = tmp_path / "answers_vqa.txt"
    txt.write_text("yes\nno\n2\n")
    assert AnswerVocab.load(txt).answers == ["yes", "no", "2"]


def test_vocab_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(VLPError, match="bad.json"):
        AnswerVocab.load(bad)
    with pytest.raises(VLPError, match="repeats"):
        AnswerVocab(["yes", "no", "yes"])
    with pytest.raises(VLPError, match="no such"):
        AnswerVocab.load(tmp_path / "missing.json")


def test_targets_and_out_of_vocab_count():
    vocab = AnswerVocab(["yes", "no", "2"])
    # 7 x "yes" -> 1.0; 2 x "two" normalises to "2" -> 0.6; "maybe" is outside: no target
    answers = ["yes"] * 7 + ["two", "Two"] + ["maybe"]
    targets, stats = build_targets([answers, ["blue"] * 10], vocab)
    assert targets[0] == pytest.approx({0: 1.0, 2: 0.6})
    assert targets[1] == {}
    assert (stats.questions, stats.answers, stats.answers_out_of_vocab,
            stats.questions_without_target) == (2, 20, 11, 1)
    assert "11 of 20 answers" in stats.summary()
    assert soft_targets(["no"], vocab) == {1: 0.0}  # one annotator: no subset matches
