"""Tokenise captions once with a Hugging Face BERT tokenizer and cache the ids on disk."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import ClassVar

import numpy as np

from vlp.data.mapped import MappedArrays, save_arrays
from vlp.errors import VLPError


@dataclass
class TokenizedTexts(MappedArrays):
    """Word-piece ids of many texts, flat: text i is ids[offsets[i]:offsets[i + 1]]
    (no [CLS]/[SEP]). Read from the cache, the arrays are mapped from its files."""

    ids: np.ndarray      # int32
    offsets: np.ndarray  # int64, len(texts) + 1
    source: Path | None = None  # the cache folder the arrays are mapped from
    names: ClassVar[tuple[str, ...]] = ("ids", "offsets")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]


def load_tokenizer(bert_dir: str | Path, do_lower_case: bool = False):
    """The fast BERT tokenizer of a model directory (vocab.txt / tokenizer.json);
    `do_lower_case` forces lower-casing (VLP's flag) on top of the directory's setting.
    Without the flag, a directory that says nothing about case (no tokenizer_config.json,
    as BERT's original releases) keeps case, as VLP's tokenizer did; transformers would
    lower-case it."""
    from transformers import BertTokenizerFast

    bert_dir = Path(bert_dir)
    if not (bert_dir / "vocab.txt").is_file() and not (bert_dir / "tokenizer.json").is_file():
        raise VLPError(f"--bert_model {bert_dir}: no vocab.txt or tokenizer.json (a Hugging "
                       "Face BERT directory is needed; nothing is downloaded)")
    says_case = (bert_dir / "tokenizer_config.json").is_file() or \
        (bert_dir / "tokenizer.json").is_file()
    kwargs = {"do_lower_case": True} if do_lower_case else \
        ({} if says_case else {"do_lower_case": False})
    return BertTokenizerFast.from_pretrained(str(bert_dir), local_files_only=True, **kwargs)


class WhitespaceTokenizer:
    """VLP's --tokenized_input: a text is already its tokens, split on whitespace (no
    lower-casing, no word pieces); each must be in the vocabulary of `tokenizer`, whose
    ids they take. VLP stopped at a token outside it; here that is an error naming it."""

    # Tells the token cache these ids apart from the word-piece tokenizer's.
    cache_tag = "whitespace"

    def __init__(self, tokenizer):
        self.vocab = tokenizer.get_vocab()

    def get_vocab(self) -> dict[str, int]:
        return self.vocab

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict:
        return {"input_ids": [self.ids(text) for text in texts]}

    def ids(self, text: str) -> list[int]:
        try:
            return [self.vocab[token] for token in text.split()]
        except KeyError as err:
            raise VLPError(f"--tokenized_input: token {err.args[0]!r} of {text!r} is not in "
                           "the vocabulary (with --tokenized_input captions are given as "
                           "the vocabulary's own tokens, separated by spaces)") from None


def tokenize(tokenizer, texts: list[str], batch: int = 4096) -> TokenizedTexts:
    pieces, lengths = [], np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch):
        out = tokenizer(texts[start:start + batch], add_special_tokens=False)["input_ids"]
        lengths[start:start + len(out)] = [len(ids) for ids in out]
        # One array per batch: millions of small arrays would cost more than the ids.
        pieces.append(np.fromiter(chain.from_iterable(out), np.int32))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    return TokenizedTexts(ids, offsets)


def cache_key(tokenizer, texts: list[str]) -> str:
    """A digest of the texts and the tokenizer's vocabulary and settings."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(getattr(tokenizer, "do_lower_case", None)).encode())
    h.update(getattr(tokenizer, "cache_tag", "").encode())
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:20]


def cached_tokenize(tokenizer, texts: list[str], cache_dir: str | Path | None) -> TokenizedTexts:
    """`tokenize`, cached in `cache_dir/tokens-<digest>/` (ids.npy, offsets.npy, written
    all at once) and returned memory-mapped from there, so DataLoader workers share it."""
    if cache_dir is None:
        return tokenize(tokenizer, texts)
    folder = Path(cache_dir).absolute() / f"tokens-{cache_key(tokenizer, texts)}"
    if not folder.is_dir():
        tokens = _npz_cache(folder.with_suffix(".npz"))
        if tokens is None:
            tokens = tokenize(tokenizer, texts)
        save_arrays(folder, tokens.arrays())
    return TokenizedTexts.open(folder)


def _npz_cache(path: Path) -> TokenizedTexts | None:
    """The same tokens as cached by earlier versions (an .npz, which cannot be mapped)."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return TokenizedTexts(data["ids"], data["offsets"])


def unigram_entropy(tokens: TokenizedTexts, sep_id: int, max_len: int | None = None) -> float:
    """Entropy (nats) of the token distribution over masked-LM candidates (each text's
    first `max_len` tokens and its final [SEP]): the loss of a model that ignores context."""
    ids = [tokens[i][:max_len] for i in range(len(tokens))]
    flat = np.concatenate(ids + [np.full(len(ids), sep_id, dtype=np.int32)])
    _, counts = np.unique(flat, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())
