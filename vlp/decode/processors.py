"""Constraints on next-token log-probabilities, each a small function applied in turn.

Each takes `lprobs` [rows, vocab] and the tokens so far `history` [rows, t] and returns
lprobs with forbidden tokens at -inf (VLP used -10000; -inf cannot be outvoted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass(frozen=True)
class MinLength:
    """No end token before `min_length` tokens (VLP's --min_len)."""

    eos_id: int
    min_length: int

    def __call__(self, lprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if history.shape[1] + 1 <= self.min_length:
            lprobs = lprobs.clone()
            lprobs[:, self.eos_id] = NEG_INF
        return lprobs


@dataclass(frozen=True)
class NoRepeatNgram:
    """Forbid a token that would repeat an n-gram already in the row (VLP's
    --forbid_duplicate_ngrams --ngram_size). As VLP: nothing is forbidden right after an
    ignored word (--forbid_ignore_word), and ignored words are never forbidden."""

    n: int
    ignore: tuple[int, ...] = ()

    def __call__(self, lprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        rows, t = history.shape
        n = self.n
        if t < n:
            return lprobs
        windows = history.unfold(1, n, 1)                       # [rows, t-n+1, n]
        tail = history[:, t - n + 1:]                           # [rows, n-1]
        match = (windows[:, :, :n - 1] == tail[:, None, :]).all(-1)
        banned = windows[:, :, n - 1]
        if self.ignore:
            ignore = torch.tensor(self.ignore, device=history.device)
            match &= ~torch.isin(tail, ignore).any(-1, keepdim=True)
            match &= ~torch.isin(banned, ignore)
        hits = torch.zeros(lprobs.shape, dtype=torch.long, device=lprobs.device)
        hits.scatter_add_(1, banned, match.long())
        return lprobs.masked_fill(hits > 0, NEG_INF)


def apply(processors, lprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    for p in processors:
        lprobs = p(lprobs, history)
    return lprobs
