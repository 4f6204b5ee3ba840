"""Are generated ToyWorld captions true? Every claim a caption makes, checked against the
shapes drawn in its image.

CIDEr rewards the reference captions' words, so "a yellow triangle in the top left corner"
scores well for a triangle drawn at the bottom left. This reads a caption's words into
claims and checks each against the scene (vlp.eval.toyworld_scenes):
- a noun phrase ("a big yellow triangle", "two disks", "one red shape") claims its
  shape, then its colour, then its size: each is true when a drawn object has it
  together with the phrase's attributes already found, so one wrong word fails one claim;
- a number ("two triangles", "there are three shapes", "a single object") claims exactly
  that many objects of the description;
- a place ("in the top left corner", "on the right", "at the bottom", "in the center")
  claims that an object of the phrase before it has its centre in that third of the
  picture along each axis the words name: "at the top" is the top row, any column; "in
  the center" the middle of both (ToyWorld's 3x3 grid, image y pointing down);
- a relation ("a red disk left of a blue box", "above", "over", "under", "to the right
  of") claims two distinct objects of the phrases, the first's centre lying that way of
  the second's along the axis the words name;
- the objects a caption names one by one must be distinct: "a blue triangle, a blue
  triangle" with one drawn fails a count claim;
- a caption cut off mid-phrase ("... on a", "left of") fails an "incomplete" claim, and
  words outside ToyWorld's vocabulary fail an "unread" claim.
Places and relations are judged on the objects that fit the phrase's attributes that
held; a phrase that names nothing drawn leaves them unjudged.

    report = check_results(json.load(open("model.3.test.beam3.results.json")),
                           "runs/quickstart/toyworld")
    print(report.summary())
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vlp.errors import VLPError
from vlp.eval.toyworld_scenes import (
    COLOR_WORDS, NUMBER_WORDS, PLURAL_WORDS, SHAPE_WORDS, SIZE_WORDS, Drawn, Scene, read_scenes,
)

KINDS = ("colour", "shape", "size", "count", "relation", "place", "incomplete", "unread")
ARTICLES = ("a", "an", "the")
GENERIC_NOUNS = ("shape", "shapes", "object", "objects")
SCENE_NOUNS = ("picture", "image", "photo", "scene")
BACKGROUND_WORDS = ("light", "textured", "plain", "pale", "background")
FILLERS = ("there", "is", "are", "and", "with", "of")
PREPOSITIONS = ("in", "on", "at", "to")
PLACE_WORDS = {"top": "row", "bottom": "row", "left": "col", "right": "col", "center": None,
               "centre": None, "middle": None}
RELATION_WORDS = {"above": "above", "over": "above", "below": "below", "under": "below",
                  "beneath": "below"}
# "on top of a box", "to the left of a box": the one direction word of a place names the relation.
PLACE_RELATION = {"left": "left of", "right": "right of", "top": "above", "bottom": "below"}

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Claim:
    kind: str   # one of KINDS
    text: str   # the caption's words the claim rests on
    true: bool


@dataclass(frozen=True)
class Verdict:
    image_id: int | str
    caption: str
    claims: tuple[Claim, ...]
    mentioned: int      # drawn objects the caption names (each at most once)
    scene: tuple[str, ...]  # what is drawn: "small red triangle, bottom left"

    @property
    def true(self) -> bool:
        return all(c.true for c in self.claims)

    @property
    def failed(self) -> list[Claim]:
        return [c for c in self.claims if not c.true]

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "caption": self.caption, "true": self.true,
                "failed": [{"kind": c.kind, "text": c.text} for c in self.failed],
                "claims": len(self.claims), "mentioned": self.mentioned, "drawn": list(self.scene)}


@dataclass(frozen=True)
class TruthReport:
    captions: int
    fully_true: float        # share of captions whose every claim is true
    by_kind: dict            # kind -> (claims true, claims made)
    mentioned: float         # mean drawn objects a caption names
    drawn: float             # mean objects drawn in the captioned images
    verdicts: tuple[Verdict, ...] = field(default=(), repr=False)

    def share(self, kind: str) -> float | None:
        true, made = self.by_kind.get(kind, (0, 0))
        return true / made if made else None

    def as_dict(self, verdicts: bool = False) -> dict:
        out = {"captions": self.captions, "fully_true": self.fully_true,
               "by_kind": {k: {"true": t, "claims": n, "share": t / n if n else None}
                           for k, (t, n) in self.by_kind.items()},
               "mentioned": self.mentioned, "drawn": self.drawn}
        if verdicts:
            out["verdicts"] = [v.as_dict() for v in self.verdicts]
        return out

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {100 * t / n:.0f}% of {n}" if k in KINDS[:6] else f"{n} {k}"
                          for k, (t, n) in self.by_kind.items() if n)
        return (f"captions fully true {100 * self.fully_true:.1f}% of {self.captions} "
                f"(claims true: {kinds or 'none made'}); they name {self.mentioned:.2f} of "
                f"{self.drawn:.2f} drawn objects")


def cell(o: Drawn, scene: Scene) -> tuple[str, str]:
    """(row, column) of the object's centre in a 3x3 grid: ('top', 'left'), ('middle', ...)."""
    row = ("top", "middle", "bottom")[min(2, int(3 * o.cy / scene.height))]
    col = ("left", "middle", "right")[min(2, int(3 * o.cx / scene.width))]
    return row, col


def in_place(o: Drawn, where: tuple[str | None, str | None], scene: Scene) -> bool:
    """Is the centre in the (row, column) named? None leaves that axis free."""
    return all(want is None or want == got for want, got in zip(where, cell(o, scene)))


def holds(a: Drawn, relation: str, b: Drawn) -> bool:
    """Does a's centre lie `relation` ('left of', 'right of', 'above', 'below') b's?"""
    return {"left of": a.cx < b.cx, "right of": a.cx > b.cx,
            "above": a.cy < b.cy, "below": a.cy > b.cy}[relation]


@dataclass
class _Phrase:
    text: str
    number: int | None
    sizes: list[str]
    colors: list[str]
    shape: str | None
    referents: list[int] = field(default_factory=list)

    @property
    def total(self) -> bool:
        """'four objects', 'a single shape': about the whole scene, naming no object."""
        return self.shape is None and not self.sizes and not self.colors


class _Reader:
    """Reads a caption's words left to right into phrases, places, relations and problems."""

    def __init__(self, words: list[str]):
        self.w, self.i = words, 0
        self.phrases: list[_Phrase] = []
        self.places: list[tuple[_Phrase, tuple[str | None, str | None], str]] = []
        self.relations: list[tuple[_Phrase, str, _Phrase, str]] = []
        self.problems: list[Claim] = []

    def peek(self, k: int = 0) -> str | None:
        return self.w[self.i + k] if self.i + k < len(self.w) else None

    def text(self, start: int) -> str:
        return " ".join(self.w[start:self.i])

    def incomplete(self, start: int) -> None:
        self.i = len(self.w)
        self.problems.append(Claim("incomplete", self.text(start), False))

    def unread(self, start: int) -> None:
        self.i = max(self.i, start + 1)
        self.problems.append(Claim("unread", self.text(start), False))

    def read(self) -> _Reader:
        if not self.w:
            self.problems.append(Claim("incomplete", "", False))
        while self.i < len(self.w):
            w, start = self.peek(), self.i
            if w in FILLERS:
                self.i += 1
                if self.i == len(self.w):
                    self.incomplete(start)
            elif _starts_phrase(w):
                self.phrase()
            elif w in PREPOSITIONS or w in RELATION_WORDS or w in ("left", "right"):
                self.spatial()
            else:
                while self.peek() is not None and not _known(self.peek()):
                    self.i += 1
                self.unread(start)
        return self

    def phrase(self) -> _Phrase | None:
        """A noun phrase; scene and background mentions ('a picture', 'a pale background')
        are read and give None."""
        start, number = self.i, None
        if self.peek() in ARTICLES:
            self.i += 1
            if self.peek() == "single":
                number, self.i = 1, self.i + 1
        elif self.peek() in NUMBER_WORDS:
            number, self.i = NUMBER_WORDS[self.peek()], self.i + 1
        sizes, colors, background = [], [], False
        while (w := self.peek()) in SIZE_WORDS or w in COLOR_WORDS or w in BACKGROUND_WORDS[:-1]:
            if w in SIZE_WORDS:
                sizes.append(SIZE_WORDS[w])
            elif w in COLOR_WORDS:
                colors.append(w)
            else:
                background = True
            self.i += 1
        noun = self.peek()
        if noun is None:
            return self.incomplete(start)
        self.i += 1
        if noun in SCENE_NOUNS or noun == "background":
            return None
        shape = SHAPE_WORDS.get(noun) or PLURAL_WORDS.get(noun)
        if background or (shape is None and noun not in GENERIC_NOUNS):
            self.i -= 1
            return self.unread(start)
        p = _Phrase(self.text(start), number, sizes, colors, shape)
        self.phrases.append(p)
        return p

    def spatial(self) -> None:
        start, w = self.i, self.peek()
        self.i += 1
        if w in RELATION_WORDS:
            return self.relation(RELATION_WORDS[w], start)
        if w in ("left", "right"):
            if self.peek() is None:
                return self.incomplete(start)
            if self.peek() != "of":
                return self.unread(start)
            self.i += 1
            return self.relation(f"{w} of", start)
        if self.peek() in ARTICLES:
            self.i += 1
        words = []
        while self.peek() in PLACE_WORDS:
            words.append(self.peek())
            self.i += 1
        if not words:
            return self.scene_mention(start)
        if self.peek() == "corner":
            self.i += 1
        if self.peek() != "of":
            return self.place(words, start)
        self.i += 1
        nxt = self.peek(1) if self.peek() in ARTICLES else self.peek()
        if nxt is None:
            return self.incomplete(start)
        if nxt in SCENE_NOUNS:
            self.i += 1 + (self.peek() in ARTICLES)
            return self.place(words, start)
        directions = [x for x in words if x in PLACE_RELATION]
        if len(directions) != 1:
            return self.unread(start)
        return self.relation(PLACE_RELATION[directions[0]], start)

    def scene_mention(self, start: int) -> None:
        """'in the picture', 'on a light background'."""
        while self.peek() in BACKGROUND_WORDS[:-1]:
            self.i += 1
        if self.peek() is None:
            return self.incomplete(start)
        if self.peek() in SCENE_NOUNS or self.peek() == "background":
            self.i += 1
            return None
        return self.unread(start)

    def place(self, words: list[str], start: int) -> None:
        axes = {PLACE_WORDS[x]: x for x in words if PLACE_WORDS[x]}
        if len(axes) != len([x for x in words if PLACE_WORDS[x]]) or not self.phrases:
            return self.unread(start)
        # "center" or "middle" names the middle of the axes no other word names.
        free = None if len(axes) == len(words) else "middle"
        where = (axes.get("row", free), axes.get("col", free))
        subject = self.phrases[-1]
        self.places.append((subject, where, f"{subject.text} {self.text(start)}"))

    def relation(self, relation: str, start: int) -> None:
        if not self.phrases:
            return self.unread(start)
        subject = self.phrases[-1]
        if self.peek() is None:
            return self.incomplete(start)
        if not _starts_phrase(self.peek()):
            return self.unread(start)
        known, problems = len(self.phrases), len(self.problems)
        self.phrase()
        if len(self.phrases) > known:
            obj = self.phrases[-1]
            self.relations.append((subject, relation, obj, f"{subject.text} {self.text(start)}"))
        elif len(self.problems) == problems:  # "left of the picture": no object named
            self.unread(start)


def _starts_phrase(w: str | None) -> bool:
    return w is not None and (w in ARTICLES or w in NUMBER_WORDS or w in SIZE_WORDS
                              or w in COLOR_WORDS or w in SHAPE_WORDS or w in PLURAL_WORDS
                              or w in GENERIC_NOUNS or w in SCENE_NOUNS
                              or w in BACKGROUND_WORDS)


def _known(w: str) -> bool:
    return (_starts_phrase(w) or w in FILLERS or w in PREPOSITIONS or w in PLACE_WORDS
            or w in RELATION_WORDS or w == "corner")


def _phrase_claims(p: _Phrase, objects: tuple[Drawn, ...]) -> list[Claim]:
    """Shape, then colour, then size, each checked among the objects that have the
    attributes already found; then the number, among those."""
    found, claims = list(range(len(objects))), []
    if p.number == 0:
        claims.append(Claim("count", p.text, not _full_matches(p, objects)))
        p.referents = []
        return claims
    for kind, attr, values in (("shape", "shape", [p.shape] if p.shape else []),
                               ("colour", "color", p.colors), ("size", "size", p.sizes)):
        for value in values:
            hit = [k for k in found if getattr(objects[k], attr) == value]
            claims.append(Claim(kind, p.text, bool(hit)))
            found = hit or found
    p.referents = found if not claims or any(c.true for c in claims) else []
    if p.number is not None:
        claims.append(Claim("count", p.text, len(p.referents) == p.number))
    return claims


def _full_matches(p: _Phrase, objects: tuple[Drawn, ...]) -> list[int]:
    return [k for k, o in enumerate(objects)
            if (p.shape is None or o.shape == p.shape) and all(o.color == c for c in p.colors)
            and all(o.size == z for z in p.sizes)]


def _assigned(slots: list[list[int]]) -> int:
    """How many slots get distinct objects at most (each slot lists the objects it may be)."""
    owner: dict[int, int] = {}

    def place(s: int, seen: set[int]) -> bool:
        for k in slots[s]:
            if k not in seen:
                seen.add(k)
                if k not in owner or place(owner[k], seen):
                    owner[k] = s
                    return True
        return False

    return sum(place(s, set()) for s in range(len(slots)))


def _slots(phrases: list[tuple[_Phrase, list[int]]]) -> list[list[int]]:
    """One slot per object a phrase names ('two disks': two), listing what it may be."""
    return [objs for p, objs in phrases for _ in range(p.number or 1)]


def _where(o: Drawn, scene: Scene) -> str:
    return " ".join(w for w in cell(o, scene) if w != "middle") or "center"


def check_caption(caption: str, scene: Scene, image_id: int | str = "") -> Verdict:
    """Every claim of one caption, checked against its scene."""
    reader = _Reader(_WORD.findall(caption.lower())).read()
    objects = scene.objects
    claims: list[Claim] = []
    for p in reader.phrases:
        claims += _phrase_claims(p, objects)
    for p, where, text in reader.places:
        if p.referents:
            claims.append(Claim("place", text, any(in_place(objects[k], where, scene)
                                                    for k in p.referents)))
    for a, relation, b, text in reader.relations:
        if a.referents and b.referents:
            claims.append(Claim("relation", text, any(
                holds(objects[i], relation, objects[j]) for i in a.referents
                for j in b.referents if i != j)))
    named = [p for p in reader.phrases if not p.total]
    counted = [p for p in named if p.referents and (p.number is None
                                                   or len(p.referents) == p.number)]
    if len(counted) > 1:
        slots = _slots([(p, p.referents) for p in counted])
        claims.append(Claim("count", ", ".join(p.text for p in counted),
                            _assigned(slots) == len(slots)))
    mentioned = _assigned(_slots([(p, _full_matches(p, objects)) for p in named]))
    scene_words = tuple(f"{o.size} {o.color} {o.shape}, {_where(o, scene)}" for o in objects)
    return Verdict(image_id, caption, tuple(claims + reader.problems), mentioned, scene_words)


def check_results(results: list[dict], source: str | Path | Mapping,
                  dataset: str = "coco") -> TruthReport:
    """Every caption of a results list ([{"image_id", "caption"}], as `vlp decode` writes
    it) checked against a ToyWorld directory or annotation file (see
    toyworld_scenes.read_scenes for the ids), or a mapping id -> Scene."""
    scenes = source if isinstance(source, Mapping) else read_scenes(source, dataset)
    where = "the scenes given" if isinstance(source, Mapping) else str(source)
    verdicts = []
    for r in results:
        if r["image_id"] not in scenes:
            raise VLPError(f"image id {r['image_id']!r} of the results is not an image of {where}")
        verdicts.append(check_caption(r["caption"], scenes[r["image_id"]], r["image_id"]))
    return summarise(verdicts, [len(scenes[r["image_id"]].objects) for r in results])


def summarise(verdicts: list[Verdict], drawn: list[int]) -> TruthReport:
    by_kind = {k: [0, 0] for k in KINDS}
    for v in verdicts:
        for c in v.claims:
            by_kind[c.kind][0] += c.true
            by_kind[c.kind][1] += 1
    n = max(len(verdicts), 1)
    return TruthReport(len(verdicts), sum(v.true for v in verdicts) / n,
                       {k: (t, m) for k, (t, m) in by_kind.items()},
                       sum(v.mentioned for v in verdicts) / n, sum(drawn) / n, tuple(verdicts))
