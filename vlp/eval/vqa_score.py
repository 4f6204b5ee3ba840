"""The official VQA accuracy (GT-Vision-Lab/VQA `vqaEval.py`), answer for answer.

Per question, `metric="official"` (the tool since 2021-03-11): newlines and tabs become
spaces and the ends are stripped, in the prediction and in the ten ground truth answers;
then, only when those ten are not all identical, all eleven are normalised alike
(`normalize_answer`: punctuation, lower case, number words, articles, contractions).
`metric="pre2021"` (the tool before, and the copy in Pythia that VLP's eval_vqa2.py ran):
the prediction is always normalised, the ground truth answers are only stripped of
punctuation, and only when they are not all identical (no lower-casing, no number words,
no articles: "Two" among the answers never matches).
Then, for each of the ten answers left out in turn, min(1, matches among the other nine
/ 3), averaged. Answers are told apart by (answer, confidence, id), as the official tool
compares answer records (by position when the reader has no ids, as with an imdb).
Overall and per-type figures are 100 * sum / count over the questions in annotation-file
order, rounded with Python's `round(x, 2)`; per question, round(100 * accuracy, 2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlp.data.captions import read_json
from vlp.data.vqa import VQAExample, id_list, read_vqa_json
from vlp.errors import VLPError
from vlp.eval.vqa_answers import normalize_answer, strip_punctuation, unfold_whitespace

DIGITS = 2  # the official tool's default precision
OFFICIAL, PRE_2021 = "official", "pre2021"
METRICS = (OFFICIAL, PRE_2021)


def compared_answers(prediction: str, truth: Sequence[str], metric: str = OFFICIAL
                     ) -> tuple[str, list[str]]:
    """The prediction and the ground truth answers as the chosen version of the tool
    compares them."""
    if metric == OFFICIAL:
        prediction = unfold_whitespace(prediction)
        truth = [unfold_whitespace(a) for a in truth]
        if len(set(truth)) > 1:
            return normalize_answer(prediction), [normalize_answer(a) for a in truth]
        return prediction, truth
    if metric == PRE_2021:
        if len(set(truth)) > 1:
            truth = [strip_punctuation(a) for a in truth]
        return normalize_answer(prediction), list(truth)
    raise VLPError(f"--vqa_metric {metric}: expected one of {', '.join(METRICS)}")


def question_accuracy(prediction: str, example: VQAExample, metric: str = OFFICIAL) -> float:
    """Unrounded official accuracy of one prediction, in [0, 1]."""
    if not example.answers:
        raise VLPError(f"question {example.question_id} has no ground truth answers")
    predicted, truth = compared_answers(prediction, example.answers, metric)
    n = len(truth)
    ids = example.answer_ids if example.answer_ids is not None else range(n)
    confidences = example.answer_confidences or (None,) * n
    records = list(zip(truth, confidences, ids))
    # Leaving one record out drops every record equal to it (all fields), as the official
    # list comprehension does; with distinct answer ids that is exactly one.
    per_left_out = [
        min(1, sum(1 for other in records if other != left_out and other[0] == predicted) / 3)
        for left_out in records
    ]
    return float(sum(per_left_out)) / len(per_left_out)


@dataclass
class VQAScores:
    """Accuracies in percent, rounded as the official tool rounds them."""
    overall: float
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question_type: dict[str, float] = field(default_factory=dict)
    per_question: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The official tool's names: accuracy['overall'|'perAnswerType'|'perQuestionType']
        and evalQA (here 'perQuestion')."""
        return {"overall": self.overall, "perAnswerType": self.per_answer_type,
                "perQuestionType": self.per_question_type,
                "perQuestion": {str(q): a for q, a in self.per_question.items()}}

    def summary(self) -> str:
        """Three lines: overall, per answer type, per question type."""
        def listing(figures):
            return ", ".join(f"{t} {a:.2f}" for t, a in sorted(figures.items(), key=str))
        return (f"overall: {self.overall:.2f}\n"
                f"per answer type: {listing(self.per_answer_type)}\n"
                f"per question type: {listing(self.per_question_type)}")


def _percent(values: list[float], digits: int) -> float:
    # The official order of operations: 100 * sum first, then divide.
    return round(100 * float(sum(values)) / len(values), digits)


def score(predictions: Mapping[int, str], examples: Sequence[VQAExample],
          digits: int = DIGITS, metric: str = OFFICIAL) -> VQAScores:
    """Official accuracy of `predictions` ({question_id: answer}) on annotated `examples`,
    summed in the order given (the annotations file's, for figures equal to the tool's);
    `metric` picks the tool's version (module docstring)."""
    if not examples:
        raise VLPError("no annotated questions to score")
    check_coverage(predictions.keys(), [e.question_id for e in examples])
    overall: list[float] = []
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    per_question = {}
    for e in examples:
        acc = question_accuracy(predictions[e.question_id], e, metric)
        overall.append(acc)
        if e.answer_type is not None:  # imdb files carry no types
            by_answer_type.setdefault(e.answer_type, []).append(acc)
        if e.question_type is not None:
            by_question_type.setdefault(e.question_type, []).append(acc)
        per_question[e.question_id] = round(100 * acc, digits)
    return VQAScores(
        overall=_percent(overall, digits),
        per_answer_type={t: _percent(v, digits) for t, v in by_answer_type.items()},
        per_question_type={t: _percent(v, digits) for t, v in by_question_type.items()},
        per_question=per_question,
    )


def check_coverage(answered, expected, results: str = "results",
                   questions: str = "the annotations") -> None:
    """Every expected question answered, nothing else answered."""
    answered, expected_set = list(answered), set(expected)
    unknown = [q for q in answered if q not in expected_set]
    if unknown:
        raise VLPError(f"{results}: answers for questions not in {questions}, "
                       f"{id_list(unknown)}")
    answered = set(answered)
    missing = [q for q in expected if q not in answered]
    if missing:
        raise VLPError(f"{results}: no answer for questions of {questions}, "
                       f"{id_list(missing)}")


def read_results(path: str | Path) -> dict[int, str]:
    """A results file `[{"question_id": int, "answer": str}, ...]` as {question_id: answer};
    an id answered twice is an error (the official tool would keep the last silently)."""
    data = read_json(path, "VQA results")
    if not isinstance(data, list):
        raise VLPError(f"{path}: VQA results must be a JSON list of "
                       "{\"question_id\", \"answer\"} objects")
    answers: dict[int, str] = {}
    repeated = []
    for i, r in enumerate(data):
        qid = r.get("question_id") if isinstance(r, dict) else None
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise VLPError(f"{path}: entry {i} has no integer 'question_id'")
        if not isinstance(r.get("answer"), str):
            raise VLPError(f"{path}: question {qid} has no string 'answer'")
        if qid in answers:
            repeated.append(qid)
        answers[qid] = r["answer"]
    if repeated:
        raise VLPError(f"{path}: questions answered more than once, {id_list(repeated)}")
    return answers


def score_files(results: str | Path, questions: str | Path, annotations: str | Path,
                digits: int = DIGITS, metric: str = OFFICIAL) -> VQAScores:
    """`vlp score-vqa`: official accuracy of a results file on one annotated split."""
    predictions = read_results(results)
    examples = read_vqa_json(questions, annotations, annotation_order=True)
    check_coverage(predictions.keys(), [e.question_id for e in examples],
                   results=str(results), questions=str(annotations))
    return score(predictions, examples, digits, metric)


def write_metrics(scores: VQAScores, path: str | Path) -> None:
    Path(path).write_text(json.dumps(scores.to_json(), indent=1) + "\n", encoding="utf-8")
