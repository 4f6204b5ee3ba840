"""BLEU-1..4 and ROUGE-L as coco-caption computes them, on tokenized captions.

Inputs are space-joined token strings, one candidate and a list of references per image.
BLEU uses the reference length closest to the candidate's (ties: the shorter), corpus
counts for the corpus score and coco-caption's smoothing constants for per-image scores.
ROUGE-L is the LCS F-measure with beta 1.2, best precision and recall over references.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from coco_caption.cider import ngram_counts

_TINY, _SMALL = 1e-15, 1e-9  # coco-caption's: a zero count still gives a finite ratio


def _bleu_stats(candidate: str, references: Sequence[str], n: int) -> tuple:
    max_counts: Counter = Counter()
    ref_lens = []
    for ref in references:
        ref_lens.append(len(ref.split()))
        for gram, count in ngram_counts(ref, n).items():
            max_counts[gram] = max(max_counts[gram], count)
    length = len(candidate.split())
    correct = [0] * n
    for gram, count in ngram_counts(candidate, n).items():
        correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
    guess = [max(0, length - k) for k in range(n)]
    ref_len = min(ref_lens, key=lambda r: (abs(r - length), r))
    return correct, guess, length, ref_len


def _bleu_from(correct: np.ndarray, guess: np.ndarray, test_len, ref_len) -> np.ndarray:
    """BLEU-1..n from clipped-match and n-gram counts ([..., n]) and lengths ([...])."""
    n = correct.shape[-1]
    precisions = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=-1)
    bleu = precisions ** (1.0 / np.arange(1, n + 1))
    ratio = (np.asarray(test_len, float) + _TINY) / (np.asarray(ref_len, float) + _SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1)), 1.0)
    return bleu * np.asarray(penalty)[..., None]


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]],
         n: int = 4) -> tuple[list[float], np.ndarray]:
    """(corpus BLEU-1..n, per-image scores [images, n])."""
    stats = [_bleu_stats(c, r, n) for c, r in zip(candidates, references)]
    correct = np.array([s[0] for s in stats], dtype=float).reshape(-1, n)
    guess = np.array([s[1] for s in stats], dtype=float).reshape(-1, n)
    test_len = np.array([s[2] for s in stats], dtype=float)
    ref_len = np.array([s[3] for s in stats], dtype=float)
    per_image = _bleu_from(correct, guess, test_len, ref_len)
    corpus = _bleu_from(correct.sum(0), guess.sum(0), test_len.sum(), ref_len.sum())
    return [float(x) for x in corpus], per_image


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over `b` (Hyyrö 2004): bit j
    of `v` is cleared where the LCS row grows, so the LCS is the number of cleared bits."""
    masks: dict[str, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]],
            beta: float = 1.2) -> tuple[float, np.ndarray]:
    """(mean ROUGE-L, per-image scores)."""
    scores = np.zeros(len(candidates))
    for i, (candidate, refs) in enumerate(zip(candidates, references)):
        # Split on single spaces as coco-caption does: an empty caption is one empty token.
        cand = candidate.split(" ")
        prec, rec = [], []
        for ref in refs:
            tokens = ref.split(" ")
            lcs = lcs_length(tokens, cand)
            prec.append(lcs / len(cand))
            rec.append(lcs / len(tokens))
        p, r = max(prec), max(rec)
        if p != 0 and r != 0:
            scores[i] = ((1 + beta ** 2) * p * r) / (r + beta ** 2 * p)
    return float(scores.mean()), scores
