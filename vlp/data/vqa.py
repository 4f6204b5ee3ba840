"""VQA v2 questions and answers: the official JSON files and Pythia's imdb `.npy` (VLP's
`--src_file`), both read into `VQAExample`s.

Official layout: a questions file `{"questions": [{"image_id", "question",
"question_id"}]}` and, except on test splits, an annotations file `{"annotations":
[{"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer",
"answers": [{"answer", "answer_confidence", "answer_id"}] x 10}]}`.
imdb layout: a numpy object array; entry 0 is a header dict, every other entry a dict with
`image_name`, `question_str`, `question_id`, `image_id` and, except on test, `answers`
(ten strings, already normalised by Pythia).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path

from vlp.data.captions import read_json
from vlp.errors import VLPError
from vlp.numpy_pickle import ArrayUnpickler


@dataclass(frozen=True)
class VQAExample:
    question_id: int
    image_id: int | str
    question: str
    answers: tuple[str, ...] | None          # the annotators' answers; None on test splits
    question_type: str | None = None         # official JSON only
    answer_type: str | None = None           # 'yes/no' | 'number' | 'other'
    multiple_choice_answer: str | None = None
    answer_ids: tuple | None = None          # official JSON only, one per answer
    answer_confidences: tuple | None = None  # official JSON only, one per answer
    image_name: str | None = None            # imdb only: e.g. COCO_train2014_000000000009


def id_list(ids, limit: int = 10) -> str:
    """'3 ids: [1, 2, 3]', or the first `limit` of them and the total."""
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    more = ", ..." if len(ids) > limit else ""
    return f"{len(ids)} ids: [{shown}{more}]"


def _records(path: str | Path, key: str, what: str) -> list[dict]:
    data = read_json(path, what)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise VLPError(f"{path}: a VQA {what} file needs a list of objects under {key!r}")
    return items


def _field(item: dict, name: str, path, index: int, kind: type | None = None):
    """item[name], present and (bools aside) of type `kind`, or an error naming both."""
    if name not in item:
        raise VLPError(f"{path}: entry {index} has no {name!r}")
    value = item[name]
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise VLPError(f"{path}: entry {index} has {name}={value!r}, expected "
                       f"{kind.__name__}")
    return value


def read_questions(path: str | Path) -> list[dict]:
    """The question records of an official questions file, checked: integer ids, once."""
    questions = _records(path, "questions", "questions")
    seen, repeated = set(), []
    for i, q in enumerate(questions):
        qid = _field(q, "question_id", path, i, int)
        _field(q, "question", path, i, str)
        _field(q, "image_id", path, i)
        if qid in seen:
            repeated.append(qid)
        seen.add(qid)
    if repeated:
        raise VLPError(f"{path}: question ids appear more than once, {id_list(repeated)}")
    return questions


def read_annotations(path: str | Path) -> list[dict]:
    """The annotation records of an official annotations file, checked."""
    annotations = _records(path, "annotations", "annotations")
    seen, repeated = set(), []
    for i, a in enumerate(annotations):
        qid = _field(a, "question_id", path, i, int)
        answers = _field(a, "answers", path, i, list)
        if not answers or not all(isinstance(x, dict) and isinstance(x.get("answer"), str)
                                  for x in answers):
            raise VLPError(f"{path}: question {qid} needs a non-empty list of "
                           "{\"answer\": string} objects under 'answers'")
        for name in ("question_type", "answer_type"):
            _field(a, name, path, i, str)
        if qid in seen:
            repeated.append(qid)
        seen.add(qid)
    if repeated:
        raise VLPError(f"{path}: question ids annotated more than once, {id_list(repeated)}")
    return annotations


def _from_json(q: dict, a: dict | None) -> VQAExample:
    if a is None:
        return VQAExample(q["question_id"], q["image_id"], q["question"], None)
    answers = a["answers"]
    return VQAExample(
        q["question_id"], q["image_id"], q["question"],
        answers=tuple(x["answer"] for x in answers),
        question_type=a["question_type"], answer_type=a["answer_type"],
        multiple_choice_answer=a.get("multiple_choice_answer"),
        answer_ids=tuple(x.get("answer_id") for x in answers),
        answer_confidences=tuple(x.get("answer_confidence") for x in answers),
    )


def read_vqa_json(questions: str | Path, annotations: str | Path | None = None, *,
                  require_answers: bool = False,
                  annotation_order: bool = False) -> list[VQAExample]:
    """Examples in the questions file's order (the annotations file's order with
    `annotation_order`, the order the official evaluation sums in). With `annotations`,
    every question must have exactly one annotation and every annotation a question;
    `require_answers` (training) refuses a split without annotations."""
    qs = read_questions(questions)
    if annotations is None:
        if require_answers:
            raise VLPError(f"{questions}: training needs the annotations file of this split")
        return [_from_json(q, None) for q in qs]
    annotated = read_annotations(annotations)
    by_id = {a["question_id"]: a for a in annotated}
    unanswered = [q["question_id"] for q in qs if q["question_id"] not in by_id]
    if unanswered:
        raise VLPError(f"{annotations}: no annotation for questions of {questions}, "
                       f"{id_list(unanswered)}")
    asked = {q["question_id"] for q in qs}
    orphans = [qid for qid in by_id if qid not in asked]
    if orphans:
        raise VLPError(f"{annotations}: annotations for questions not in {questions}, "
                       f"{id_list(orphans)}")
    if annotation_order:
        q_by_id = {q["question_id"]: q for q in qs}
        return [_from_json(q_by_id[a["question_id"]], a) for a in annotated]
    return [_from_json(q, by_id[q["question_id"]]) for q in qs]


# --- Pythia's imdb -------------------------------------------------------------------

def _load_object_npy(path: Path):
    import numpy as np
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        try:
            version = npy.read_magic(f)
            read_header = (npy.read_array_header_1_0 if version == (1, 0)
                           else npy.read_array_header_2_0)
            _, _, dtype = read_header(f)
        except ValueError as err:
            raise VLPError(f"{path}: not a .npy file ({err})") from None
        if not dtype.hasobject:
            raise VLPError(f"{path}: an imdb is a numpy object array, this one holds {dtype}")
        try:
            array = ArrayUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
            raise VLPError(f"{path}: cannot read the imdb array ({err})") from None
    return np.asarray(array, dtype=object).reshape(-1)


def _imdb_image_id(entry: dict):
    if "image_id" in entry:
        value = entry["image_id"]
        return int(value) if hasattr(value, "__index__") else value
    digits = re.search(r"(\d+)$", str(entry.get("image_name", "")))
    return int(digits.group(1)) if digits else entry.get("image_name")


def read_imdb(path: str | Path, *, require_answers: bool = False) -> list[VQAExample]:
    """Examples of a Pythia imdb `.npy`, header (entry 0) skipped."""
    path = Path(path)
    if not path.is_file():
        raise VLPError(f"{path}: no such imdb file")
    entries = _load_object_npy(path)
    if len(entries) == 0 or not isinstance(entries[0], dict):
        raise VLPError(f"{path}: an imdb starts with a header dict")
    if "question_id" in entries[0] or "question_str" in entries[0]:
        # Pythia (and VLP after it) skip entry 0 unread: a file without the header would
        # silently lose its first question.
        raise VLPError(f"{path}: entry 0 is a question, not the imdb header (Pythia's imdb "
                       "files start with a header dict such as {'has_answer': True, ...})")
    examples, unanswered = [], []
    for i, e in enumerate(entries[1:], start=1):
        if not isinstance(e, dict) or "question_id" not in e:
            raise VLPError(f"{path}: imdb entry {i} is not a dict with a 'question_id'")
        question = e.get("question_str", e.get("question"))
        if not isinstance(question, str):
            raise VLPError(f"{path}: imdb entry {i} has no 'question_str'")
        answers = e.get("answers")
        if answers is not None:
            answers = tuple(str(a) for a in answers)
        if not answers:
            answers = None
            unanswered.append(int(e["question_id"]))
        examples.append(VQAExample(int(e["question_id"]), _imdb_image_id(e), question,
                                   answers, image_name=e.get("image_name")))
    if require_answers and unanswered:
        raise VLPError(f"{path}: training needs answers, missing for {id_list(unanswered)}")
    return examples


def read_vqa(source: str | Path, annotations: str | Path | None = None, *,
             require_answers: bool = False) -> list[VQAExample]:
    """An imdb `.npy`, or an official questions JSON (with its annotations JSON if any)."""
    if Path(source).suffix == ".npy":
        if annotations is not None:
            return imdb_with_annotations(read_imdb(source), source, annotations)
        return read_imdb(source, require_answers=require_answers)
    return read_vqa_json(source, annotations, require_answers=require_answers)


def imdb_with_annotations(examples: list[VQAExample], source, annotations) -> list[VQAExample]:
    """VLP's evaluation: the imdb names the questions, the official annotations (its
    --ref_file) answer them; each imdb question needs exactly one annotation and each
    annotation a question, as the official tool asserts."""
    by_id = {a["question_id"]: a for a in read_annotations(annotations)}
    unanswered = [e.question_id for e in examples if e.question_id not in by_id]
    if unanswered:
        raise VLPError(f"{annotations}: no annotation for questions of {source}, "
                       f"{id_list(unanswered)}")
    asked = {e.question_id for e in examples}
    orphans = [qid for qid in by_id if qid not in asked]
    if orphans:
        raise VLPError(f"{annotations}: annotations for questions not in {source}, "
                       f"{id_list(orphans)}")
    joined = []
    for e in examples:
        official = _from_json({"question_id": e.question_id, "image_id": e.image_id,
                               "question": e.question}, by_id[e.question_id])
        joined.append(replace(official, image_name=e.image_name))
    return joined
