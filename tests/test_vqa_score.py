"""The official VQA accuracy, both versions of the tool: tricky answers worked out by hand,
and agreement with independent transcriptions of the official per-question algorithm
(GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py, Python 3 version) as
it is since commit a013f00 (2021-03-11, "Fixed processing answers bug") and as it was
before, on random and ToyWorld answers."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vlp.cli import score_vqa
from vlp.cli.args import ArgumentParser
from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.data.vqa import VQAExample
from vlp.errors import VLPError
from vlp.eval.vqa_answers import CONTRACTIONS
from vlp.eval.vqa_score import METRICS, question_accuracy, score, score_files

# --- reference: the official algorithm, step by step, on answer dicts ----------------
REF_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
             ">", "<", "@", "`", ",", "?", "!"]
REF_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
               "ten": "10"}
REF_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern, typo included
REF_COMMA = re.compile(r"(\d)(\,)(\d)")


def ref_punctuation(in_text):
    out = in_text
    for p in REF_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or REF_COMMA.search(in_text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return REF_PERIOD.sub("", out, count=re.UNICODE)  # the official third argument


def ref_digit_article(in_text):
    words = []
    for w in in_text.lower().split():
        w = REF_NUMBERS.get(w, w)
        if w not in ("a", "an", "the"):
            words.append(w)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def ref_leave_one_out(res, gts):
    accs = []
    for datum in gts:
        others = [item for item in gts if item != datum]
        matching = [item for item in others if item["answer"] == res]
        accs.append(min(1, float(len(matching)) / 3))
    return float(sum(accs)) / len(accs)


def ref_question_pre2021(res_answer, gt_answer_dicts):
    """The per-question steps before a013f00."""
    gts = copy.deepcopy(gt_answer_dicts)
    res = res_answer.replace("\n", " ").replace("\t", " ").strip()
    res = ref_digit_article(ref_punctuation(res))
    if len({a["answer"] for a in gts}) > 1:
        for a in gts:
            a["answer"] = ref_punctuation(a["answer"])
    return ref_leave_one_out(res, gts)


def ref_question_official(res_answer, gt_answer_dicts):
    """The per-question steps since a013f00."""
    gts = copy.deepcopy(gt_answer_dicts)
    for a in gts:
        a["answer"] = a["answer"].replace("\n", " ")
        a["answer"] = a["answer"].replace("\t", " ")
        a["answer"] = a["answer"].strip()
    res = res_answer.replace("\n", " ").replace("\t", " ").strip()
    if len({a["answer"] for a in gts}) > 1:
        for a in gts:
            a["answer"] = ref_punctuation(a["answer"])
            a["answer"] = ref_digit_article(a["answer"])
        res = ref_punctuation(res)
        res = ref_digit_article(res)
    return ref_leave_one_out(res, gts)


REF_QUESTION = {"official": ref_question_official, "pre2021": ref_question_pre2021}


def ref_evaluate(results, annotations, n=2, metric="official"):
    """results: {qid: answer}; annotations: the annotation dicts in file order."""
    acc_qa, by_q, by_a, per_q = [], {}, {}, {}
    for ann in annotations:
        acc = REF_QUESTION[metric](results[ann["question_id"]], ann["answers"])
        acc_qa.append(acc)
        by_q.setdefault(ann["question_type"], []).append(acc)
        by_a.setdefault(ann["answer_type"], []).append(acc)
        per_q[ann["question_id"]] = round(100 * acc, n)
    mean = lambda v: round(100 * float(sum(v)) / len(v), n)  # noqa: E731
    return {"overall": mean(acc_qa), "perQuestionType": {k: mean(v) for k, v in by_q.items()},
            "perAnswerType": {k: mean(v) for k, v in by_a.items()}, "perQuestion": per_q}


# --- helpers ---------------------------------------------------------------------------
def records(answers, ids=None):
    ids = ids or range(1, len(answers) + 1)
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i}
            for a, i in zip(answers, ids)]


def example(answers, qid=1, qtype="what is", atype="other", ids=None):
    recs = records(answers, ids)
    return VQAExample(qid, 7, "q?", tuple(r["answer"] for r in recs), qtype, atype,
                      answer_ids=tuple(r["answer_id"] for r in recs),
                      answer_confidences=tuple(r["answer_confidence"] for r in recs))


# (prediction, ten ground truth answers, accuracy in percent before 2021 and since, and
#  why, as the earlier tool saw it)
TRICKY = [
    ("yes.", ["yes"] * 10, 100.0, 0.0, "the prediction's period goes"),
    ("Yes", ["yes"] * 10, 100.0, 0.0, "the prediction is lower-cased"),
    ("yes", ["yes."] * 10, 0.0, 0.0, "ten identical answers are not processed at all"),
    ("yes", ["yes."] * 9 + ["no"], 100.0, 100.0, "differing answers lose their periods"),
    ("yes", ["Yes"] * 5 + ["yes"] * 5, 100.0, 100.0, "5 'yes' still match 4 or 5 of 9"),
    ("yes", ["Yes"] * 8 + ["yes"] * 2, 60.0, 100.0, "ground truth is never lower-cased: 2 of 10"),
    ("two", ["2"] * 10, 100.0, 0.0, "number words in the prediction become digits"),
    ("2", ["two"] * 10, 0.0, 0.0, "number words in the ground truth stay words"),
    ("none", ["none"] * 10, 0.0, 100.0, "'none' becomes '0' in the prediction only"),
    ("a dog", ["dog"] * 3 + ["cat"] * 7, 90.0, 90.0, "article dropped; 3 of 10 -> 0.9"),
    ("dog", ["a dog"] * 10, 0.0, 0.0, "ground truth keeps its article"),
    ("dont", ["don't"] * 10, 100.0, 0.0, "contraction gains its apostrophe"),
    ("don't", ["don't"] * 10, 100.0, 100.0, "the apostrophe is not punctuation"),
    ("1,000", ["1,000"] * 4 + ["1000"] * 6, 100.0, 100.0, "comma between digits deleted on both"),
    ("1,000", ["1,000"] * 10, 0.0, 100.0, "identical ground truth keeps its comma"),
    ("red white", ["red,white"] * 3 + ["red"] * 7, 90.0, 90.0, "comma -> space: 3 of 10"),
    ("red white", ["red, white"] * 2 + ["red"] * 8, 60.0, 60.0, "comma next to a space deleted"),
    ("x y", ["x - y"] * 5 + ["y"] * 5, 0.0, 100.0, "ground truth keeps the double space"),
    ("x y", ["x-y"] * 5 + ["y"] * 5, 100.0, 100.0, "'-' between letters becomes one space"),
    ("cat", ["cat"] + ["dog"] * 9, 30.0, 30.0, "1 of 10 -> 0.3"),
    ("3.5", ["3.5"] * 2 + ["3"] * 8, 60.0, 60.0, "a period before a digit stays"),
    ("  yes\n", ["yes"] * 10, 100.0, 100.0, "whitespace around the prediction"),
    ("what?", ["what"] * 10, 100.0, 0.0, "'?' becomes a space, then words are re-joined"),
    ("yes", ["yes\t"] * 10, 0.0, 100.0, "identical tab-padded answers kept as they are"),
    ("yes", ["yes\t"] * 8 + ["yes"] * 2, 60.0, 100.0, "a tab is not punctuation: 2 of 10"),
    ("Two", ["2"] * 3 + ["two"] * 7, 90.0, 100.0, "ground truth number words stay: 3 of 10"),
    ("the dog", ["a dog"] * 4 + ["dog"] * 6, 100.0, 100.0, "only 'dog' matches: 6 of 10"),
    ("dont", ["dont", "don't"] * 5, 100.0, 100.0, "only \"don't\" matches: 5 of 10"),
]


@pytest.mark.parametrize("prediction, truth, pre2021, official, why", TRICKY,
                         ids=[t[4] for t in TRICKY])
def test_tricky_answers(prediction, truth, pre2021, official, why):
    e = example(truth)
    assert round(100 * question_accuracy(prediction, e, "pre2021"), 2) == pre2021
    assert round(100 * ref_question_pre2021(prediction, records(truth)), 2) == pre2021
    assert round(100 * question_accuracy(prediction, e, "official"), 2) == official
    assert round(100 * ref_question_official(prediction, records(truth)), 2) == official
    assert question_accuracy(prediction, e) == question_accuracy(prediction, e, "official")


def test_identical_answer_records_leave_each_other_out():
    # Leaving one record out removes every record equal to it; ten equal records leave
    # nothing to match, so even the right answer scores 0 (only with repeated answer ids).
    same_ids = example(["yes"] * 10, ids=[1] * 10)
    for metric in METRICS:
        assert question_accuracy("yes", same_ids, metric) == 0.0
        assert REF_QUESTION[metric]("yes", records(["yes"] * 10, [1] * 10)) == 0.0


def test_overall_and_types_round_like_the_tool():
    examples = [example(["yes"] * 10, 1, "is the", "yes/no"),
                example(["cat"] + ["dog"] * 9, 2, "what is", "other"),
                example(["2"] * 10, 3, "how many", "number")]
    scores = score({1: "yes", 2: "cat", 3: "three"}, examples)
    # accuracies 1, 0.3, 0 -> 100 * 1.3 / 3 = 43.333...
    assert scores.overall == 43.33
    assert scores.per_answer_type == {"yes/no": 100.0, "other": 30.0, "number": 0.0}
    assert scores.per_question == {1: 100.0, 2: 30.0, 3: 0.0}


def test_multiply_before_dividing_as_the_tool_does():
    # 3 questions at 0.3 among 48: 100 * 0.9 / 48 = 1.8749999999999998 -> 1.87, where
    # 100 * (0.9 / 48) = 1.875 would round to 1.88.
    examples = [example(["cat"] + ["dog"] * 9, q, "what", "other") for q in range(48)]
    predictions = {q: "cat" if q < 3 else "fish" for q in range(48)}
    scores = score(predictions, examples)
    assert scores.overall == 1.87 and scores.per_answer_type == {"other": 1.87}


POOL = ["yes", "Yes", "yes.", "no", "two", "2", "Two", "none", "0", "a dog", "dog", "the dog",
        "dont", "don't", "1,000", "1000", "red,white", "red, white", "red white", "3.5",
        "3.", "t-shirt", "t shirt", "what?", "mr. t", "..", "a - b", "b", "Im", "im",
        "1,000 (approx)", "left/right", "12:30", " yes ", "yes\n", "twas", "yes\t", "\tno",
        "Two\t", "the  dog\t", "an apple", "one", "Ten", "isnt", "isn't", "whats"]


def random_questions(count: int, seed: int = 0):
    """Annotation dicts and results drawn from POOL: punctuated, article-bearing,
    number-word, contraction and tab-padded answers, few distinct per question."""
    rng = random.Random(seed)
    annotations, results = [], {}
    for qid in range(count):
        k = rng.choice([1, 2, 3, 10])  # few distinct answers makes matches likely
        palette = rng.sample(POOL, k)
        answers = [rng.choice(palette) for _ in range(10)]
        annotations.append({"question_id": qid, "question_type": rng.choice("abc"),
                            "answer_type": rng.choice(["yes/no", "number", "other"]),
                            "answers": records(answers)})
        results[qid] = rng.choice(palette + [rng.choice(POOL)])
    return annotations, results


def as_examples(annotations):
    return [example([r["answer"] for r in a["answers"]], a["question_id"],
                    a["question_type"], a["answer_type"]) for a in annotations]


@pytest.mark.parametrize("metric", METRICS)
def test_agrees_with_reference_on_random_answers(metric):
    annotations, results = random_questions(1500)
    ours = score(results, as_examples(annotations), metric=metric).to_json()
    ref = ref_evaluate(results, annotations, metric=metric)
    ref["perQuestion"] = {str(k): v for k, v in ref["perQuestion"].items()}
    assert ours == ref
    assert len(set(ref["perQuestion"].values())) > 4  # the cases were not all trivial


def test_the_two_versions_disagree_on_some_questions():
    annotations, results = random_questions(2000, seed=1)
    examples = as_examples(annotations)
    now, before = (score(results, examples, metric=m).per_question for m in METRICS)
    differ = [q for q in now if now[q] != before[q]]
    # About a third of these deliberately awkward questions score differently (a real
    # split's answers are mostly clean, so far fewer there).
    assert 0.1 < len(differ) / len(now) < 0.5
    higher = sum(now[q] > before[q] for q in differ)
    assert 0 < higher < len(differ)  # either version can score a question higher


@pytest.fixture(scope="module")
def toy_vqa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tw") / "toyworld"
    generate(root, ToyWorldConfig(images=40, pretrain_images=10, seed=5, answer_noise=0.3),
             progress=False)
    return root / "annotations" / "vqa"


def _perturb(answer: str, rng: random.Random) -> str:
    words = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five"}
    return rng.choice([answer, answer.upper(), answer + ".", "the " + answer,
                       words.get(answer, answer), answer + "?", " " + answer + "\n"])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_agrees_with_reference_on_toyworld(toy_vqa, tmp_path, split, metric):
    qfile = toy_vqa / f"v2_OpenEnded_toy_{split}_questions.json"
    afile = toy_vqa / f"v2_toy_{split}_annotations.json"
    annotations = json.loads(afile.read_text())["annotations"]
    rng = random.Random(split)
    results = {a["question_id"]: _perturb(rng.choice(a["answers"])["answer"], rng)
               for a in annotations}
    res_file = tmp_path / "results.json"
    res_file.write_text(json.dumps([{"question_id": q, "answer": a}
                                    for q, a in reversed(results.items())]))
    ours = score_files(res_file, qfile, afile, metric=metric).to_json()
    ref = ref_evaluate(results, annotations, metric=metric)
    ref["perQuestion"] = {str(k): v for k, v in ref["perQuestion"].items()}
    assert ours == ref
    assert 0 < ours["overall"] < 100


def _cli(argv):
    parser = ArgumentParser(prog="vlp")
    score_vqa.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_writes_metrics(toy_vqa, tmp_path, capsys):
    qfile = toy_vqa / "v2_OpenEnded_toy_val_questions.json"
    afile = toy_vqa / "v2_toy_val_annotations.json"
    annotations = json.loads(afile.read_text())["annotations"]
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"question_id": a["question_id"], "answer": "yes"}
                               for a in annotations]))
    out = tmp_path / "metrics.json"
    assert _cli(["score-vqa", str(res), str(qfile), str(afile), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"overall", "perAnswerType", "perQuestionType", "perQuestion"}
    assert len(metrics["perQuestion"]) == len(annotations)
    assert f"overall: {metrics['overall']:.2f}" in capsys.readouterr().out


def test_cli_vqa_metric_flag(tmp_path, capsys):
    """`vlp score-vqa` scores with today's tool unless --vqa_metric pre2021; `vlp eval-vqa`
    takes the same flag."""
    from vlp.cli.eval_vqa import build_parser as eval_parser

    questions = [{"image_id": 7, "question": "q?", "question_id": q} for q in (1, 2)]
    annotations = [{"question_id": 1, "image_id": 7, "question_type": "is", "answer_type": "yes/no",
                    "multiple_choice_answer": "yes", "answers": records(["yes"] * 10)},
                   {"question_id": 2, "image_id": 7, "question_type": "how", "answer_type": "number",
                    "multiple_choice_answer": "two", "answers": records(["2"] * 2 + ["two"] * 8)}]
    qfile, afile, res = tmp_path / "q.json", tmp_path / "a.json", tmp_path / "res.json"
    qfile.write_text(json.dumps({"questions": questions}))
    afile.write_text(json.dumps({"annotations": annotations}))
    res.write_text(json.dumps([{"question_id": 1, "answer": "Yes"},
                               {"question_id": 2, "answer": "two"}]))
    figures = {}
    for flag in ([], ["--vqa_metric", "official"], ["--vqa_metric", "pre2021"]):
        out = tmp_path / f"m{len(figures)}.json"
        assert _cli(["score-vqa", str(res), str(qfile), str(afile), "--out", str(out), *flag]) == 0
        figures[tuple(flag)] = json.loads(out.read_text())["perQuestion"]
    # today: "Yes" is compared as written with ten identical "yes"; all ten answers of
    # question 2 become "2", and so does the prediction
    assert figures[()] == figures[("--vqa_metric", "official")] == {"1": 0.0, "2": 100.0}
    # before 2021: "Yes" is lower-cased; "two" becomes "2" and matches only two answers
    assert figures[("--vqa_metric", "pre2021")] == {"1": 100.0, "2": 60.0}
    required = ["--model_recover_path", "m", "--src_file", "q.json"]
    assert eval_parser().parse_args(required).vqa_metric == "official"
    for metric in METRICS:
        assert eval_parser().parse_args(required + ["--vqa_metric", metric]).vqa_metric == metric


def test_unknown_missing_and_bad_results(toy_vqa, tmp_path):
    qfile = toy_vqa / "v2_OpenEnded_toy_val_questions.json"
    afile = toy_vqa / "v2_toy_val_annotations.json"
    ids = [a["question_id"] for a in json.loads(afile.read_text())["annotations"]]
    res = tmp_path / "res.json"

    def write(rows):
        res.write_text(json.dumps(rows))

    write([{"question_id": q, "answer": "yes"} for q in ids + list(range(1, 13))])
    with pytest.raises(VLPError, match=r"not in .*12 ids: \[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "
                                       r"\.\.\.\]"):
        score_files(res, qfile, afile)
    write([{"question_id": q, "answer": "yes"} for q in ids[3:]])
    with pytest.raises(VLPError, match=rf"no answer .*3 ids: \[{ids[0]}, {ids[1]}, {ids[2]}\]"):
        score_files(res, qfile, afile)
    write([{"question_id": q, "answer": "yes"} for q in ids + ids[:1]])
    with pytest.raises(VLPError, match="more than once"):
        score_files(res, qfile, afile)
    write([{"question_id": ids[0], "answer": 3}])
    with pytest.raises(VLPError, match="string 'answer'"):
        score_files(res, qfile, afile)
    res.write_text("[{")
    with pytest.raises(VLPError, match=r"res\.json: not valid JSON"):
        score_files(res, qfile, afile)


def test_cli_module_runs_in_a_subprocess(toy_vqa, tmp_path):
    qfile = toy_vqa / "v2_OpenEnded_toy_test_questions.json"
    afile = toy_vqa / "v2_toy_test_annotations.json"
    res = tmp_path / "res.json"
    res.write_text("[]")
    # What `vlp score-vqa` does once listed in COMMANDS: VLPError -> one line, exit 2.
    code = ("import sys, vlp.cli as cli; cli.COMMANDS = ('score_vqa',); "
            "sys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "score-vqa", str(res), str(qfile),
                           str(afile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no answer for questions" in proc.stderr and "Traceback" not in proc.stderr
