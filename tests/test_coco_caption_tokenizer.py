"""The Java-free tokenizer against CoreNLP's PTB tokenizer, as coco-caption runs it."""

from __future__ import annotations

import os

import pytest

from coco_caption.agreement import synthetic_captions
from coco_caption.ptb import tokenize, tokenize_lines

pytestmark = pytest.mark.usefixtures("java")

VARIED = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs' toys are on the man's bed, aren't they?",
    "It's a 3-year-old girl's birthday; she's holding a well-known X-ray.",
    "People can't, won't, don't and cannot: they're gonna wait!",
    "I'm sure we've seen he'll go, she'd say, you'll see.",
    "A train (the red one) at 10:30 p.m. carrying 1,000 tons... wow!!",
    "The U.S. flag flies over St. Louis, Mr. Smith said etc.",
    'A sign that reads "STOP" and \'slow\' in the rain',
    "A café in Zürich serves crème brûlée and jalapeño naïve dishes",
    "Ελληνικά words, Москва streets and 北京 signs; über cool",
    "A 12-year-old boy's T-shirt costs $5 or 20% off, about £3 or €4",
    "Half ½ a pizza, 3 1/2 slices and a 50/50 split at 24/7 stores",
    "A man -- or a woman — stands – waiting…",
    "An e-mail about re-entry and co-op Wi-Fi in the 1990s or the '90s",
    "A dog [on a bench] {near} a <sign> at #1 and @home",
    "the bathroom has a toilet , a sink , and a mirror .",
    "A bus at 5'7\" tall? No. 5 is here, no. really",
    "don’t it’s ‘quoted’ “double” curly quotes",
    "A photo of the letter a.",
    "An elephant is standing in the u.s.",
    "The zebra and giraffe are in the field ",
    "a black and white photo of a cat on a t.v. stand",
    "TWO ZEBRAS GRAZING IN A FIELD.",
    "rock'n'roll o'clock y'all Macy's McDonald's O'Neil",
    "kids play on 4x4 trucks at 5°C × 2",
    "A woman with an umbrella\nstands in the rain",
    "",
    "...",
]


def _java(captions):
    from coco_caption.java import ptb_tokenize
    return ptb_tokenize(captions)


def test_python_tokenizer_equals_java_on_varied_and_random_captions():
    captions = VARIED + synthetic_captions(1500, seed=7)
    java, ours = _java(captions), tokenize_lines(captions)
    diffs = [(c, j, o) for c, j, o in zip(captions, java, ours) if j != o]
    assert not diffs, diffs[:5]


def test_our_java_call_matches_pycocoevalcaps_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from coco_caption.java import package_dir
    # pycocoevalcap writes its temporary file next to its jar: make's .venv/ allows it.
    assert os.access(package_dir() / "tokenizer", os.W_OK), package_dir()
    captions = [c for c in VARIED if "\n" not in c][:20]
    theirs = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert [theirs[i][0] for i in range(len(captions))] == _java(captions)


def test_non_ascii_and_lower_casing_survive():
    assert tokenize("A Café in ZÜRICH, naïve 北京!") == "a café in zürich naïve 北京"
    assert tokenize("It's the dogs' ball") == "it 's the dogs ball"
    assert tokenize("(red) [blue]") == "-lrb- red -rrb- -lsb- blue -rsb-"


def test_a_letter_before_a_capitalised_caption_loses_its_period():
    # CoreNLP reads the captions as one file; the next line decides this case.
    assert tokenize_lines(["the letter a.", "The cat"]) == ["the letter a", "the cat"]
    assert tokenize_lines(["the letter a.", "the cat"]) == ["the letter a.", "the cat"]
    assert _java(["the letter a.", "The cat"]) == ["the letter a", "the cat"]
