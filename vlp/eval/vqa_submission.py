"""VQA challenge submission files: write one for a split, check one before upload.

A submission is a JSON list `[{"question_id": int, "answer": str}, ...]` answering every
question of the split's questions file exactly once (test-dev2015 or test2015 for
test-std), named `vqa_OpenEnded_mscoco_<subtype>_<method>_results.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from vlp.data.vqa import id_list, read_imdb, read_questions
from vlp.errors import VLPError


def submission_name(subtype: str, method: str, task: str = "OpenEnded",
                    data_type: str = "mscoco") -> str:
    """The challenge's file name, e.g. vqa_OpenEnded_mscoco_test-dev2015_vlp_results.json."""
    return f"vqa_{task}_{data_type}_{subtype}_{method}_results.json"


def _question_ids(questions: str | Path | Iterable[int]) -> list[int]:
    if isinstance(questions, (str, Path)):
        if Path(questions).suffix == ".npy":  # Pythia's imdb, as VLP evaluated test2015
            return [e.question_id for e in read_imdb(questions)]
        return [q["question_id"] for q in read_questions(questions)]
    return list(questions)


def write_submission(answers: Mapping[int, str], questions: str | Path | Iterable[int],
                     out: str | Path) -> int:
    """Write `answers` ({question_id: answer}) for every question of `questions` (a
    questions file or the ids), in that order; refuses gaps, extras and empty answers.
    Returns the number of answers written."""
    ids = _question_ids(questions)
    where = questions if isinstance(questions, (str, Path)) else "the questions"
    known = set(ids)
    extra = [q for q in answers if q not in known]
    if extra:
        raise VLPError(f"answers for questions not in {where}, {id_list(extra)}")
    missing = [q for q in ids if q not in answers]
    if missing:
        raise VLPError(f"no answer for questions of {where}, {id_list(missing)}")
    empty = [q for q in ids if not isinstance(answers[q], str) or not answers[q].strip()]
    if empty:
        raise VLPError(f"empty or non-string answers for {id_list(empty)}")
    rows = [{"question_id": q, "answer": answers[q]} for q in ids]
    Path(out).write_text(json.dumps(rows), encoding="utf-8")
    return len(rows)


def check_submission(results: str | Path, questions: str | Path) -> tuple[list[str], int]:
    """(defects, answers) of a submission against a questions file: one line per kind of
    defect, an empty list when it can be uploaded."""
    ids = _question_ids(questions)
    path = Path(results)
    if not path.is_file():
        return [f"{path}: no such file"], 0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{path}: not valid JSON ({err})"], 0
    if not isinstance(data, list):
        return [f"{path}: must be a JSON list of {{\"question_id\", \"answer\"}} objects, "
                f"not a JSON {type(data).__name__}"], 0
    defects = []
    not_objects = [i for i, r in enumerate(data)
                   if not isinstance(r, dict) or "question_id" not in r or "answer" not in r]
    if not_objects:
        defects.append(f"{len(not_objects)} entries are not objects with 'question_id' and "
                       f"'answer': indexes {id_list(not_objects)}")
    rows = [r for r in data if isinstance(r, dict) and "question_id" in r and "answer" in r]
    bad_ids = [i for i, r in enumerate(data) if isinstance(r, dict) and "question_id" in r
               and (not isinstance(r["question_id"], int) or isinstance(r["question_id"], bool))]
    if bad_ids:
        defects.append(f"{len(bad_ids)} question ids are not integers: indexes "
                       f"{id_list(bad_ids)}")
    counts = Counter(r["question_id"] for r in rows if isinstance(r["question_id"], int))
    repeated = [q for q, c in counts.items() if c > 1]
    if repeated:
        defects.append(f"question ids answered more than once, {id_list(repeated)}")
    known = set(ids)
    extra = [q for q in counts if q not in known]
    if extra:
        defects.append(f"question ids not in {questions}, {id_list(extra)}")
    missing = [q for q in ids if q not in counts]
    if missing:
        defects.append(f"questions of {questions} without an answer, {id_list(missing)}")
    empty = [r["question_id"] for r in rows
             if not isinstance(r["answer"], str) or not r["answer"].strip()]
    if empty:
        defects.append(f"answers empty or not strings, {id_list(empty)}")
    return defects, len(data)
