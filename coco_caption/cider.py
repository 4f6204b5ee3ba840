"""CIDEr-D (Vedantam et al. 2015) as coco-caption computes it, in NumPy.

coco-caption's `Cider` is CIDEr-D: tf-idf n-gram vectors (n = 1..4), each candidate n-gram
weight clipped to the reference's, a Gaussian length penalty (sigma 6), mean over n,
mean over references, times 10. Two pieces are public so that an SCST reward can build the
document frequencies once from the training references and score many samples:

    df = document_frequency(train_references)          # once
    rewards = cider_d(samples, references_per_sample, df)

Captions are token strings (split on whitespace) or token lists.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

Tokens = Union[str, Sequence[str]]


def _words(caption: Tokens) -> list[str]:
    return caption.split() if isinstance(caption, str) else list(caption)


def ngram_counts(caption: Tokens, n: int = 4) -> Counter:
    """Counts of the caption's 1..n-grams, as tuples of words."""
    words = _words(caption)
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1)
                   for i in range(len(words) - k + 1))


@dataclass
class DocumentFrequency:
    """For each n-gram, the number of images whose references contain it, and the log
    of the number of images (the idf numerator)."""
    counts: dict[tuple, float]
    log_num_images: float
    n: int = 4


def document_frequency(references: Sequence[Sequence[Tokens]], n: int = 4) -> DocumentFrequency:
    """Document frequencies from the references of each image (one list per image)."""
    counts: Counter = Counter()
    for refs in references:
        counts.update(set().union(*(ngram_counts(r, n) for r in refs)) if refs else ())
    return DocumentFrequency(dict(counts), float(np.log(float(len(references)))), n)


class _Encoded:
    """Sparse tf-idf vectors of many captions: flat arrays of (caption, n-gram id, order,
    weight), per-caption norms per order, and the length CIDEr-D's penalty compares."""

    def __init__(self, captions: Sequence[Tokens], df: DocumentFrequency, ids: dict):
        rows, cols, counts, orders, docs = [], [], [], [], []
        lengths = np.zeros(len(captions))
        for i, caption in enumerate(captions):
            for gram, count in ngram_counts(caption, df.n).items():
                rows.append(i)
                cols.append(ids.setdefault(gram, len(ids)))
                counts.append(count)
                orders.append(len(gram) - 1)
                docs.append(df.counts.get(gram, 0.0))
            # coco-caption's length is the number of bigrams (its `n == 1` is the 2-gram
            # slot); kept, since the length penalty compares these.
            lengths[i] = max(len(_words(caption)) - 1, 0)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.order = np.asarray(orders, dtype=np.int64)
        self.weight = np.asarray(counts, dtype=float) * (
            df.log_num_images - np.log(np.maximum(1.0, np.asarray(docs, dtype=float))))
        sq = np.zeros((len(captions), df.n))
        np.add.at(sq, (self.rows, self.order), self.weight ** 2)
        self.norm = np.sqrt(sq)
        self.lengths = lengths


def cider_d(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]],
            df: DocumentFrequency, sigma: float = 6.0) -> np.ndarray:
    """CIDEr-D of each candidate against its own references, with the given document
    frequencies. Returns a float array, one score per candidate."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    n = df.n
    flat_refs = [r for refs in references for r in refs]
    owner = np.repeat(np.arange(len(references)), [len(r) for r in references])
    ids: dict[tuple, int] = {}  # n-gram -> column, local to this call
    cand, ref = _Encoded(candidates, df, ids), _Encoded(flat_refs, df, ids)
    if not flat_refs or not len(cand.cols):
        return np.zeros(len(candidates))
    # Join each candidate n-gram with the same n-gram in each of its image's references:
    # keys (image, n-gram) are unique on the candidate side, so a sorted search finds them.
    cand_key = cand.rows * len(ids) + cand.cols
    ref_key = owner[ref.rows] * len(ids) + ref.cols
    order = np.argsort(cand_key)
    pos = np.minimum(np.searchsorted(cand_key[order], ref_key), len(order) - 1)
    ref_idx = np.nonzero(cand_key[order][pos] == ref_key)[0]
    cand_idx = order[pos[ref_idx]]
    vr = ref.weight[ref_idx]
    products = np.minimum(cand.weight[cand_idx], vr) * vr
    dots = np.zeros((len(flat_refs), n))
    np.add.at(dots, (ref.rows[ref_idx], ref.order[ref_idx]), products)
    # Cosine per order; coco-caption leaves the dot product as is when a norm is zero.
    norms = cand.norm[owner] * ref.norm
    safe = norms != 0
    dots[safe] /= norms[safe]
    delta = cand.lengths[owner] - ref.lengths
    dots *= np.exp(-(delta ** 2) / (2 * sigma ** 2))[:, None]
    per_ref = dots.mean(axis=1)
    sums = np.zeros(len(candidates))
    np.add.at(sums, owner, per_ref)
    counts = np.array([len(r) for r in references], dtype=float)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0) * 10.0


def corpus_cider_d(candidates: Sequence[Tokens], references: Sequence[Sequence[Tokens]],
                   sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """coco-caption's CIDEr: document frequencies from these references, then the mean."""
    scores = cider_d(candidates, references, document_frequency(references), sigma)
    return float(scores.mean()), scores
