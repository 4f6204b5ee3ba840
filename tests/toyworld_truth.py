"""An independent reading of ToyWorld files, for tests: what is drawn where
(vlp.eval.toyworld_scenes, which reads the file formats alone, not the generator) and the
answer each VQA question must have."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlp.eval.toyworld_scenes import (  # noqa: F401  (the tests import them from here)
    COLOR_WORDS, NUMBER_WORDS, PLURAL_WORDS, SHAPE_WORDS, SIZE_WORDS, Drawn, drawn_objects,
    scene_objects,
)


def load_json(path: Path):
    return json.loads(Path(path).read_text())


def matching(objects: list[Drawn], words: list[str]) -> list[Drawn]:
    """Objects fitting a description such as ['large', 'red', 'object']."""
    found = objects
    for w in words:
        if w in COLOR_WORDS:
            found = [o for o in found if o.color == w]
        elif w in SIZE_WORDS:
            found = [o for o in found if o.size == SIZE_WORDS[w]]
        elif w in SHAPE_WORDS:
            found = [o for o in found if o.shape == SHAPE_WORDS[w]]
        elif w in PLURAL_WORDS:
            found = [o for o in found if o.shape == PLURAL_WORDS[w]]
        elif w not in ("object", "objects", "shape", "shapes"):
            raise ValueError(f"unknown word {w!r}")
    return found


def _the(objects, ref: str) -> Drawn:
    found = matching(objects, ref.split())
    assert len(found) == 1, f"'the {ref}' is not unique among {objects}"
    return found[0]


def solve(question: str, objects: list[Drawn]) -> str:
    """The true answer to a ToyWorld question about `objects`."""
    q = question.lower().rstrip("?")
    if m := re.fullmatch(r"what color is the (.+)", q):
        return _the(objects, m[1]).color
    if m := re.fullmatch(r"what shape is the (.+)", q):
        return _the(objects, m[1]).shape
    if m := re.fullmatch(r"how many (.+?) (are there|are in the picture|can you see)", q):
        return str(len(matching(objects, m[1].split())))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)", q):
        return "yes" if matching(objects, [m[1], m[2]]) else "no"
    if m := re.fullmatch(r"is the (.+) to the left or to the right of the (.+)", q):
        a, b = _the(objects, m[1]), _the(objects, m[2])
        assert a.cx != b.cx
        return "left" if a.cx < b.cx else "right"
    if m := re.fullmatch(r"is the (.+) above or below the (.+)", q):
        a, b = _the(objects, m[1]), _the(objects, m[2])
        assert a.cy != b.cy
        return "above" if a.cy < b.cy else "below"
    raise ValueError(f"unknown question {question!r}")
