"""Captions for ToyWorld scenes: COCO-style descriptions and CC-style alt-text."""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlp.data.toyworld.language import (
    COUNT_WORDS, NOUNS, PLURALS, SCENE_WORDS, article, phrase, pick, place_words, region,
    relation, sentence,
)
from vlp.data.toyworld.scene import Shape

CAPTIONS_PER_IMAGE = 5
_BACKGROUNDS = ("light background", "textured background", "plain background",
                "pale background")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _listing(shapes, rng, size):
    items = _join([article(phrase(s, rng)) for s in shapes])
    return pick(rng, (f"{article(pick(rng, SCENE_WORDS))} of {items}",
                      f"{items} on a {pick(rng, _BACKGROUNDS)}",
                      items))


def _counting(shapes, rng, size):
    n = len(shapes)
    thing = pick(rng, ("shapes", "objects")) if n > 1 else pick(rng, ("shape", "object"))
    scene = pick(rng, SCENE_WORDS)
    if n == 1:
        return pick(rng, (f"a single {thing} in the {scene}",
                          f"there is one {thing} in the {scene}"))
    return pick(rng, (f"there are {COUNT_WORDS[n]} {thing} in the {scene}",
                      f"{COUNT_WORDS[n]} {thing} on a {pick(rng, _BACKGROUNDS)}",
                      f"{article(scene)} with {COUNT_WORDS[n]} {thing}"))


def _grouping(shapes, rng, size):
    """'two circles and a triangle' or 'two red shapes and a blue square'."""
    key = pick(rng, ("shape", "color"))
    groups = Counter(getattr(s, key) for s in shapes)
    parts = []
    for value, n in sorted(groups.items()):
        if key == "shape":
            noun = pick(rng, NOUNS[value])
            parts.append(article(noun) if n == 1 else f"{COUNT_WORDS[n]} {PLURALS[noun]}")
        else:
            parts.append(f"{'one' if n == 1 else COUNT_WORDS[n]} {value} "
                         f"{'shape' if n == 1 else 'shapes'}")
    return _join(parts)


def _relating(shapes, rng, size):
    pairs = [(a, b, rel) for a in shapes for b in shapes if a is not b
             and (rel := relation(a, b, size)) is not None]
    if not pairs:
        return None
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    words = {"left of": pick(rng, ("to the left of", "left of")),
             "right of": pick(rng, ("to the right of", "right of")),
             "above": pick(rng, ("above", "over")),
             "below": pick(rng, ("below", "under"))}[rel]
    return f"{article(phrase(a, rng))} {words} {article(phrase(b, rng))}"


def _locating(shapes, rng, size):
    return locating(shapes[int(rng.integers(len(shapes)))], rng, size)


def locating(s: Shape, rng: np.random.Generator, size: int) -> str:
    """'a big red disk in the top left corner of the photo': where one shape is."""
    place = place_words(region(s, size))
    return f"{article(phrase(s, rng))} {place} of the {pick(rng, SCENE_WORDS)}"


_TEMPLATES = (_listing, _counting, _grouping, _relating, _locating)


def describe(shapes: list[Shape], rng: np.random.Generator, image_size: int,
             k: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """k different captions, drawn round-robin from the templates so they vary in kind."""
    captions: list[str] = []
    for _ in range(20 * k):
        for template in rng.permutation(len(_TEMPLATES)):
            text = _TEMPLATES[template](shapes, rng, image_size)
            if text is not None and sentence(text) not in captions:
                captions.append(sentence(text))
            if len(captions) == k:
                return captions
    raise AssertionError(f"only {len(captions)} distinct captions for {shapes}")


_ALT_PREFIXES = ("stock photo", "vector illustration", "abstract composition", "clip art",
                 "geometric design element", "royalty free image")
_ALT_SUFFIXES = ("isolated on a light background", "for your design", "simple shapes",
                 "flat style", "background texture", "minimal art")


def alt_text(shapes: list[Shape], rng: np.random.Generator, image_size: int) -> str:
    """One noisy, web-like caption: some shapes, dropped words, boilerplate around them.
    As on the web, some say how two shapes lie or how many there are of a kind."""
    kind = rng.random()
    relating = _relating(shapes, rng, image_size) if kind < 0.25 else None
    if relating is not None:
        body = relating
    elif kind < 0.4:
        body = _grouping(shapes, rng, image_size)
    else:
        body = _naming(shapes, rng)
    style = int(rng.integers(4))
    if style == 0:
        return f"{pick(rng, _ALT_PREFIXES)}: {body}"
    if style == 1:
        return f"{body} {pick(rng, _ALT_SUFFIXES)}"
    if style == 2:
        return f"{pick(rng, _ALT_PREFIXES)} of {body}, {pick(rng, _ALT_SUFFIXES)}"
    return body.title()


def _naming(shapes: list[Shape], rng: np.random.Generator) -> str:
    keep = rng.permutation(len(shapes))[: int(rng.integers(1, len(shapes) + 1))]
    named = []
    for i in sorted(keep):
        s = shapes[i]
        words = phrase(s, rng).split()
        if rng.random() < 0.3:  # alt-text often drops an attribute
            words = words[1:]
        named.append(" ".join(words))
    return _join(named) if rng.random() < 0.5 else " ".join(named)
