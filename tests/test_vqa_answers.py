"""Answer normalisation, soft scores, the answer vocabulary (Pythia's answers_vqa.txt rule
against a transcription of its script, and the all-answers rule) and soft targets."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import numpy as np
import pytest

from vlp.errors import VLPError
from vlp.eval.vqa_answers import (
    CONTRACTIONS, AnswerVocab, build_targets, build_vocab, canonical_words,
    normalize_answer, pythia_answer, soft_score, soft_scores, soft_targets,
    strip_punctuation,
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


# --- Pythia's answers_vqa.txt (data_prep/vqa_v2.0/process_answers.py), transcribed ------
PY_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
            "@", "`", ",", "?", "!"]
PY_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
PY_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
PY_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def py_process_punctuation(inText):
    outText = inText
    for p in PY_PUNCT:
        if (p + " " in inText or " " + p in inText) or (
                re.search(PY_COMMA_STRIP, inText) is not None):
            outText = outText.replace(p, "")
        else:
            outText = outText.replace(p, " ")
    outText = PY_PERIOD_STRIP.sub("", outText, re.UNICODE)
    return outText


def py_process_digit_article(inText):
    outText = []
    for word in inText.lower().split():
        word = PY_MANUAL_MAP.setdefault(word, word)
        if word not in ["a", "an", "the"]:
            outText.append(word)
    for wordId, word in enumerate(outText):
        if word in CONTRACTIONS:
            outText[wordId] = CONTRACTIONS[word]
    return " ".join(outText)


def py_preprocess_answer(answer):
    answer = py_process_digit_article(py_process_punctuation(answer))
    return answer.replace(",", "")


def py_filter_answers(answers_dset, min_occurence):
    occurence = {}
    answer_list = []
    for ans_entry in answers_dset:
        gtruth = py_preprocess_answer(ans_entry["multiple_choice_answer"])
        if gtruth not in occurence:
            occurence[gtruth] = set()
        occurence[gtruth].add(ans_entry["question_id"])
    for answer in occurence.keys():
        if len(occurence[answer]) >= min_occurence:
            answer_list.append(answer)
    return answer_list


def py_answers_vqa_txt(annotations, min_freq, out_dir):
    """The script's main: the answer file it writes."""
    answer_list = py_filter_answers(annotations, min_freq)
    answer_list = [t.strip() for t in answer_list if len(t.strip()) > 0]
    answer_list.sort()
    if "<unk>" not in answer_list:
        answer_list = ["<unk>"] + answer_list
    answer_file = out_dir / "answers_vqa.txt"
    with open(answer_file, "w") as f:
        f.writelines([w + "\n" for w in answer_list])
    return answer_file


CONSENSUS_POOL = ["yes", "Yes", "yes.", "no", "No!", "two", "2", "Two", "none", "0", "a dog",
                  "dog", "the dog", "Dog.", "dont", "don't", "1,000", "1000", "red,white",
                  "red, white", "t-shirt", "T shirt", "mr. t", "isnt", "Im", "3.5", "3.",
                  "the", "?", "left/right", "red\tblue", " cat ", "cat", "<unk>", "12:30"]


def annotation_files(tmp_path, count, seed=0):
    """Questions and annotations JSON whose multiple_choice_answers come from the pool
    (skewed, so some answers clear the threshold and some do not)."""
    rng = random.Random(seed)
    weights = [1 + (i % 7) ** 2 for i in range(len(CONSENSUS_POOL))]
    questions, annotations = [], []
    for qid in range(count):
        mc = rng.choices(CONSENSUS_POOL, weights)[0]
        answers = [mc] * rng.randint(5, 10)
        answers += rng.choices(CONSENSUS_POOL, k=10 - len(answers))
        questions.append({"image_id": qid // 3, "question": "what?", "question_id": qid})
        annotations.append({"question_id": qid, "image_id": qid // 3, "question_type": "what",
                            "answer_type": "other", "multiple_choice_answer": mc,
                            "answers": [{"answer": a, "answer_confidence": "yes",
                                         "answer_id": j + 1} for j, a in enumerate(answers)]})
    q, a = tmp_path / "questions.json", tmp_path / "annotations.json"
    q.write_text(json.dumps({"questions": questions}))
    a.write_text(json.dumps({"annotations": annotations}))
    return q, a, annotations


def training_args(*extra):
    from vlp.train.args import build_parser, check

    return check(build_parser().parse_args(
        ["--do_train", "--tasks", "vqa2", "--output_dir", "out", "--src_file", "q.json",
         "--bert_model", "bert", "--features", "f.lmdb", *extra]))


@pytest.mark.parametrize("min_count", [None, 1, 3, 30])
def test_pythia_answer_list_from_multiple_choice_answers(tmp_path, min_count):
    """vlp train's default vocabulary is the answers_vqa.txt Pythia's script writes for
    the same annotations and --min_freq (9 by default, as Pythia built it)."""
    from vlp.data.vqa import read_vqa
    from vlp.train.vqa import build_answer_vocab

    qfile, afile, annotations = annotation_files(tmp_path, 400)
    args = training_args(*(["--answer_min_count", str(min_count)] if min_count else []))
    assert args.answer_vocab_from == "multiple_choice_answer"
    ours = build_answer_vocab(args, read_vqa(qfile, afile))
    txt = py_answers_vqa_txt(annotations, min_count or 9, tmp_path)
    assert ours.answers == AnswerVocab.load(txt).answers
    assert ours.answers[0] == "<unk>" and ours.first_answer == 1
    assert 3 < len(ours) < len({py_preprocess_answer(a) for a in CONSENSUS_POOL}) + 1
    for raw in CONSENSUS_POOL:
        assert pythia_answer(raw) == py_preprocess_answer(raw)


def test_imdb_answers_give_the_same_list(tmp_path):
    """An imdb has no multiple_choice_answer: the most frequent of its ten answers stands
    in (VQA's definition of it), and the list is Pythia's for those."""
    from vlp.data.vqa import read_vqa
    from vlp.train.vqa import build_answer_vocab

    qfile, afile, annotations = annotation_files(tmp_path, 400, seed=1)
    examples = read_vqa(qfile, afile)
    imdb = tmp_path / "imdb_train2014.npy"
    np.save(imdb, np.array([{"has_answer": True}] + [
        {"image_name": f"COCO_train2014_{e.image_id:012d}", "image_id": e.image_id,
         "question_id": e.question_id, "question_str": e.question, "answers": list(e.answers)}
        for e in examples], dtype=object))
    args = training_args()
    from_imdb = build_answer_vocab(args, read_vqa(imdb))
    most_frequent = [{**a, "multiple_choice_answer": Counter(
        x["answer"] for x in a["answers"]).most_common(1)[0][0]} for a in annotations]
    assert from_imdb.answers == AnswerVocab.load(py_answers_vqa_txt(most_frequent, 9,
                                                                     tmp_path)).answers
    # Here the JSON's own multiple_choice_answer is also the most frequent answer (it fills
    # half the slots or more, and comes first), so both inputs give the same list.
    assert build_answer_vocab(args, examples).answers == from_imdb.answers


def test_unk_is_never_predicted():
    import torch

    from vlp.eval.vqa_predict import best_answers

    logits = torch.tensor([[9.0, 1.0, 3.0, 2.0], [5.0, -1.0, -3.0, -2.0]])
    with_unk = AnswerVocab(["<unk>", "no", "red", "yes"])
    assert best_answers(logits, with_unk).tolist() == [2, 1]
    values, indices = best_answers(logits[0], with_unk, k=10)
    assert indices.tolist() == [2, 3, 1] and values.tolist() == [3.0, 2.0, 1.0]
    # A vocabulary without <unk> first (the all_answers rule) predicts from every index.
    assert best_answers(logits, AnswerVocab(["cat", "no", "red", "yes"])).tolist() == [0, 0]
    with pytest.raises(VLPError, match="only <unk>"):
        AnswerVocab(["<unk>"])
