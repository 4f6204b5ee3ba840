"""Words for ToyWorld scenes: synonyms, referring expressions, spatial relations."""

from __future__ import annotations

import re

import numpy as np

from vlp.data.toyworld.scene import Shape

# Captions vary their words; VQA answers always use the canonical name (the key).
NOUNS = {"circle": ("circle", "disk"), "square": ("square", "box"), "triangle": ("triangle",)}
PLURALS = {"circle": "circles", "disk": "disks", "square": "squares", "box": "boxes",
           "triangle": "triangles"}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
COUNT_WORDS = ("zero", "one", "two", "three", "four")
SCENE_WORDS = ("picture", "image", "photo", "scene")
# A relation is stated only when the centres are this far apart (fraction of the side).
MIN_OFFSET = 0.15

_TOKEN = re.compile(r"[a-z0-9]+")


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def tokenize(raw: str) -> list[str]:
    """Karpathy-style tokens: lower case, punctuation dropped."""
    return _TOKEN.findall(raw.lower())


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def phrase(s: Shape, rng: np.random.Generator, with_size: bool | None = None) -> str:
    """'red circle' or 'big red disk': a caption's words for one shape."""
    if with_size is None:
        with_size = bool(rng.integers(2))
    words = [pick(rng, SIZE_WORDS[s.size])] if with_size else []
    return " ".join(words + [s.color, pick(rng, NOUNS[s.shape])])


# Attribute sets tried in order; the first that singles an object out names it.
_REFERENCES = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"),
               ("color",), ("size", "color"))


def refer(target: Shape, shapes: list[Shape], omit: str | None = None) -> str | None:
    """Shortest canonical description that singles `target` out, avoiding attribute `omit`.

    Returns e.g. 'circle', 'red circle', 'large red object' — or None when no
    description is unique (two identical shapes).
    """
    for attrs in _REFERENCES:
        if omit in attrs:
            continue
        matches = [s for s in shapes if all(getattr(s, a) == getattr(target, a) for a in attrs)]
        if len(matches) == 1:
            words = [getattr(target, a) for a in attrs]
            return " ".join(words if "shape" in attrs else words + ["object"])
    return None


def relation(a: Shape, b: Shape, image_size: int) -> str | None:
    """Where a is relative to b along the dominant axis: 'left of', 'right of', 'above',
    'below'; None when the centres are too close to say."""
    (ax, ay), (bx, by) = a.center, b.center
    dx, dy = ax - bx, ay - by
    if max(abs(dx), abs(dy)) < MIN_OFFSET * image_size:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def region(s: Shape, image_size: int) -> str:
    """'top left', 'center', 'bottom', ... from the shape's centre in a 3x3 grid."""
    cx, cy = s.center
    col = ("left", "", "right")[min(2, int(3 * cx / image_size))]
    row = ("top", "", "bottom")[min(2, int(3 * cy / image_size))]
    return " ".join(w for w in (row, col) if w) or "center"


def place_words(where: str) -> str:
    """'in the top left corner', 'on the left', 'at the top', 'in the center' for a cell."""
    return {"center": "in the center", "top": "at the top", "bottom": "at the bottom",
            "left": "on the left", "right": "on the right"}.get(where, f"in the {where} corner")
