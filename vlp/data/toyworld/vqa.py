"""VQA v2-style questions about ToyWorld scenes, with ten noisy human answers each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from vlp.data.toyworld.language import PLURALS, article, pick, refer, relation
from vlp.data.toyworld.scene import COLORS, MAX_OBJECTS, SHAPES, SIZES, Shape

QUESTIONS_PER_IMAGE = 5
ANSWERS_PER_QUESTION = 10
KINDS = ("color", "shape", "count", "exists", "position")
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above",
             "yes": "no", "no": "yes"}


# The question kinds by VQA question type, as the official metric's perQuestionType names them.
KIND_OF_TYPE = {"what color is the": "colour", "what shape is the": "shape",
                "is there a": "exists", "how many": "count", "is the": "position"}


def accuracy_by_kind(metrics: dict) -> dict[str, float]:
    """The official metric's accuracy per ToyWorld question kind (colour, shape, exists,
    count, position, in that order), from its perQuestionType."""
    types = metrics["perQuestionType"]
    known = {kind: types[t] for t, kind in KIND_OF_TYPE.items() if t in types}
    return {**known, **{t: a for t, a in types.items() if t not in KIND_OF_TYPE}}


@dataclass(frozen=True)
class Question:
    kind: str  # one of KINDS
    question: str
    answer: str  # the true answer, canonical form
    question_type: str  # VQA's question-type prefix
    answer_type: str  # 'yes/no' | 'number' | 'other'


def _color(shapes, rng, size):
    target = pick(rng, shapes)
    ref = refer(target, shapes, omit="color")
    if ref is None:
        return None
    return Question("color", f"What color is the {ref}?", target.color,
                    "what color is the", "other")


def _shape(shapes, rng, size):
    target = pick(rng, shapes)
    ref = refer(target, shapes, omit="shape")
    if ref is None:
        return None
    return Question("shape", f"What shape is the {ref}?", target.shape,
                    "what shape is the", "other")


def _count(shapes, rng, size):
    attr = pick(rng, ("all", "color", "shape", "size", "color+shape"))
    color, shape, size_ = pick(rng, COLORS), pick(rng, SHAPES), pick(rng, SIZES)
    if attr == "all":
        text, n = pick(rng, ("objects", "shapes")), len(shapes)
    elif attr == "color":
        text, n = f"{color} objects", sum(s.color == color for s in shapes)
    elif attr == "shape":
        text, n = PLURALS[shape], sum(s.shape == shape for s in shapes)
    elif attr == "size":
        text, n = f"{size_} objects", sum(s.size == size_ for s in shapes)
    else:
        text = f"{color} {PLURALS[shape]}"
        n = sum(s.color == color and s.shape == shape for s in shapes)
    where = pick(rng, ("are there", "are in the picture", "can you see"))
    return Question("count", f"How many {text} {where}?", str(n), "how many", "number")


def _exists(shapes, rng, size):
    """Balanced: 'yes' for a drawn colour+shape, 'no' for an absent one, equally often."""
    present = {(s.color, s.shape) for s in shapes}
    if rng.random() < 0.5:
        color, shape = pick(rng, sorted(present))
        answer = "yes"
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = pick(rng, absent)
        answer = "no"
    return Question("exists", f"Is there {article(color + ' ' + shape)}?", answer,
                    "is there a", "yes/no")


def _position(shapes, rng, size):
    pairs = [(a, b, rel) for a in shapes for b in shapes if a is not b
             and (rel := relation(a, b, size)) is not None]
    pairs = [(a, b, rel) for a, b, rel in pairs
             if refer(a, shapes) is not None and refer(b, shapes) is not None]
    if not pairs:
        return None
    a, b, rel = pick(rng, pairs)
    ra, rb = refer(a, shapes), refer(b, shapes)
    if rel in ("left of", "right of"):
        return Question("position", f"Is the {ra} to the left or to the right of the {rb}?",
                        rel.split()[0], "is the", "other")
    return Question("position", f"Is the {ra} above or below the {rb}?", rel,
                    "is the", "other")


_ASK = {"color": _color, "shape": _shape, "count": _count, "exists": _exists,
        "position": _position}


def ask(shapes: list[Shape], rng: np.random.Generator, image_size: int,
        k: int = QUESTIONS_PER_IMAGE) -> list[Question]:
    """Up to k different questions, each of a kind drawn uniformly among those that apply."""
    questions: list[Question] = []
    for _ in range(10 * k):
        kind = pick(rng, KINDS)
        # One yes/no question per image keeps yes and no equally likely: a second
        # draw would be discarded more often when it repeats the image's only 'yes'.
        if kind == "exists" and any(x.kind == "exists" for x in questions):
            continue
        q = _ASK[kind](shapes, rng, image_size)
        if q is not None and q.question not in {x.question for x in questions}:
            questions.append(q)
        if len(questions) == k:
            break
    return questions


def wrong_answer(q: Question, rng: np.random.Generator) -> str:
    """A plausible mistake of the same kind as the true answer."""
    if q.kind == "color":
        return pick(rng, [c for c in COLORS if c != q.answer])
    if q.kind == "shape":
        return pick(rng, [s for s in SHAPES if s != q.answer])
    if q.kind == "count":
        n = int(q.answer)
        return str(pick(rng, [m for m in (n - 1, n + 1) if 0 <= m <= MAX_OBJECTS]))
    return _OPPOSITE[q.answer]


def human_answers(q: Question, rng: np.random.Generator, noise: float) -> list[dict]:
    """Ten answers; each is a plausible wrong one with probability `noise`."""
    answers = []
    for k in range(ANSWERS_PER_QUESTION):
        wrong = rng.random() < noise
        text = wrong_answer(q, rng) if wrong else q.answer
        confidence = pick(rng, ("maybe", "no", "yes") if wrong else ("yes", "yes", "yes", "maybe"))
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": k + 1})
    return answers


def consensus(answers: list[dict], truth: str) -> str:
    """VQA's multiple_choice_answer: the most frequent answer (ties: the truth, then A-Z)."""
    counts = Counter(a["answer"] for a in answers)
    return min(counts, key=lambda a: (-counts[a], a != truth, a))
