"""Search strategies over decoding steps: greedy, beam search (VLP's), sampling, and
scoring given captions token by token.

`steps` is anything with `step(prev_tokens | None) -> logits [rows, vocab]` and
`reorder(index)` (vlp.model.decoding's CachedSteps / FullSteps). The strategies know
nothing about the model; constraints come from vlp.decode.processors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vlp.decode.processors import MinLength, NoRepeatNgram, apply

LENGTH_NORMS = ("additive", "gnmt")


@dataclass
class SearchSettings:
    eos_id: int
    max_length: int = 20           # tokens generated, the end token included (--max_tgt_length)
    beam_size: int = 1
    min_length: int = 0            # --min_len
    length_penalty: float = 0.0    # VLP: score + penalty * length; gnmt: alpha
    length_norm: str = "additive"
    forbid_duplicate_ngrams: bool = False
    ngram_size: int = 3
    forbid_ignore: tuple[int, ...] = field(default_factory=tuple)

    def processors(self) -> list:
        out = []
        if self.min_length:
            out.append(MinLength(self.eos_id, self.min_length))
        if self.forbid_duplicate_ngrams:
            out.append(NoRepeatNgram(self.ngram_size, tuple(self.forbid_ignore)))
        return out

    def final_score(self, score: float, length: int) -> float:
        if self.length_norm == "gnmt":
            return score / (((5.0 + length) / 6.0) ** self.length_penalty)
        return score + self.length_penalty * length


@dataclass
class Hypothesis:
    tokens: list[int]   # the caption, without the end token
    score: float        # sum of token log-probabilities (the end token's included)
    finished: bool      # ended with the end token (else cut at max_length)


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.float(), dim=-1)


def _cut(tokens: list[int], eos: int) -> tuple[list[int], bool]:
    return (tokens[:tokens.index(eos)], True) if eos in tokens else (tokens, False)


@torch.no_grad()
def greedy(steps, rows: int, s: SearchSettings) -> list[Hypothesis]:
    """The most likely token at every step. As VLP's greedy decoding, --min_len and
    --forbid_duplicate_ngrams do not apply here (its beam search alone honoured them)."""
    device = None
    history, scores, done, prev = None, None, None, None
    for _ in range(s.max_length):
        lprobs = _log_probs(steps.step(prev))
        device = lprobs.device
        if history is None:
            history = torch.zeros(rows, 0, dtype=torch.long, device=device)
            scores = torch.zeros(rows, device=device)
            done = torch.zeros(rows, dtype=torch.bool, device=device)
        best, prev = lprobs.max(-1)
        scores += best.masked_fill(done, 0.0)
        prev = prev.masked_fill(done, s.eos_id)
        history = torch.cat([history, prev[:, None]], 1)
        done |= prev == s.eos_id
        if done.all():
            break
    out = []
    for row, score in zip(history.tolist(), scores.tolist()):
        tokens, finished = _cut(row, s.eos_id)
        out.append(Hypothesis(tokens, score, finished))
    return out


@torch.no_grad()
def beam_search(steps, batch: int, s: SearchSettings) -> list[Hypothesis]:
    """VLP's beam search: a beam that emits the end token is a finished candidate (its
    score penalised by length) and leaves the beam on the next step; search stops for an
    image once all its beams have ended, else at max_length, where every live beam is a
    candidate too. The best penalised candidate wins."""
    return [best[0] for best in beam_search_n_best(steps, batch, s, 1)]


@torch.no_grad()
def beam_search_n_best(steps, batch: int, s: SearchSettings, n: int) -> list[list[Hypothesis]]:
    """beam_search's `n` best candidates per image, best first (by the penalised score,
    ties in the order found); the first is beam_search's caption."""
    k, procs = s.beam_size, s.processors()
    lprobs = _log_probs(steps.step(None))
    device, vocab = lprobs.device, lprobs.shape[-1]
    lprobs = apply(procs, lprobs, torch.zeros(batch, 0, dtype=torch.long, device=device))
    scores, tokens = lprobs.topk(k, dim=-1)                         # [B, K]
    steps.reorder(torch.arange(batch, device=device).repeat_interleave(k))
    history = tokens.reshape(-1, 1)
    beam_scores = scores.reshape(-1)
    candidates: list[list[tuple[float, float, list[int], bool]]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)

    def record(ended: torch.Tensor) -> None:
        # Read once per step (each read from a GPU waits for the queued work).
        rows = ended.nonzero().flatten()
        for row, score, seq in zip(rows.tolist(), beam_scores[rows].tolist(),
                                   history[rows].tolist()):
            if score != float("-inf"):
                candidates[row // k].append((s.final_score(score, len(seq)), score, seq, True))

    ended = history[:, -1] == s.eos_id
    record(ended)
    for _ in range(1, s.max_length):
        done |= ended.view(batch, k).all(-1)
        if done.all():
            break
        lprobs = apply(procs, _log_probs(steps.step(history[:, -1])), history)
        cand = beam_scores[:, None] + lprobs
        cand = cand.masked_fill(ended[:, None] | done.repeat_interleave(k)[:, None], float("-inf"))
        scores, flat = cand.view(batch, k * vocab).topk(k, dim=-1)
        back = (torch.arange(batch, device=device)[:, None] * k + flat // vocab).reshape(-1)
        steps.reorder(back)
        history = torch.cat([history.index_select(0, back), (flat % vocab).reshape(-1, 1)], 1)
        beam_scores = scores.reshape(-1)
        ended = history[:, -1] == s.eos_id
        record(ended & ~done.repeat_interleave(k))
    live = ~done.repeat_interleave(k) & ~ended & (beam_scores > float("-inf"))
    rows = live.nonzero().flatten()
    for row, score, seq in zip(rows.tolist(), beam_scores[rows].tolist(), history[rows].tolist()):
        candidates[row // k].append((s.final_score(score, len(seq)), score, seq, False))
    return [_best(found, n, s.eos_id) for found in candidates]


def _best(found: list[tuple[float, float, list[int], bool]], n: int, eos: int) -> list[Hypothesis]:
    if not found:
        return [Hypothesis([], float("-inf"), False)]
    out = []
    for _, score, seq, _ in sorted(found, key=lambda c: c[0], reverse=True)[:n]:
        tokens, finished = _cut(seq, eos)
        out.append(Hypothesis(tokens, score, finished))
    return out


@dataclass
class Samples:
    tokens: torch.Tensor     # [rows, T]; after the end token (and `after_end` more): pad_id
    log_probs: torch.Tensor  # [rows, T] of the sampled tokens (0 where pad_id); keeps grad
    lengths: torch.Tensor    # [rows] tokens up to and including the end token


def sample(steps, rows: int, s: SearchSettings, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, pad_id: int = 0,
           generator: torch.Generator | None = None, after_end: int = 0,
           support: torch.Tensor | None = None) -> Samples:
    """Draw one caption per row from the model's distribution (with temperature, top-k,
    top-p). Runs under the caller's grad mode, so SCST can backpropagate the log-probs.
    `after_end`: steps a row goes on drawing after its end token, those tokens and
    log-probs kept as drawn (VLP's SCST loss counts the token drawn right after the end);
    pad_id and 0 only after them. `support`: the token ids that may be drawn (an output
    vocabulary's, whose other tokens score -1e4: 0 after the softmax), drawn among alone,
    at a fraction of the whole vocabulary's cost."""
    procs = s.processors()
    tokens, log_probs, prev, end_step, history = [], [], None, None, None
    for t in range(s.max_length):
        logits = steps.step(prev).float() / temperature
        if history is None:
            device = logits.device
            history = torch.zeros(rows, 0, dtype=torch.long, device=device)
            end_step = torch.full((rows,), s.max_length, dtype=torch.long, device=device)
        lprobs = apply(procs, F.log_softmax(logits, dim=-1), history)
        with torch.no_grad():
            drawable = lprobs.detach() if support is None else lprobs.detach()[:, support]
            probs = _filter(drawable, top_k, top_p).softmax(-1)
            prev = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            if support is not None:
                prev = support[prev]
        done = t > end_step + after_end
        prev = prev.masked_fill(done, pad_id)
        log_probs.append(lprobs.gather(1, prev[:, None]).squeeze(1).masked_fill(done, 0.0))
        tokens.append(prev)
        history = torch.cat([history, prev[:, None]], 1)
        first_end = (prev == s.eos_id) & (end_step == s.max_length)
        end_step = end_step.masked_fill(first_end, t)
        if bool((end_step + after_end <= t).all()):
            break
    out = torch.stack(tokens, 1)
    is_eos = out == s.eos_id
    lengths = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1,
                          torch.full_like(out[:, 0], out.shape[1]))
    return Samples(out, torch.stack(log_probs, 1), lengths)


def caption_log_probs(steps, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each given token's log-probability after the tokens before it, through the steps
    the searches take: `tokens` [rows, T] (row i's end token at lengths[i] - 1, anything
    after it) -> [rows, T], 0 past each row's length. Runs under the caller's grad mode."""
    out, prev = [], None
    for t in range(tokens.shape[1]):
        out.append(_log_probs(steps.step(prev)).gather(1, tokens[:, t:t + 1]).squeeze(1))
        prev = tokens[:, t]
    live = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]
    return torch.stack(out, 1).masked_fill(~live, 0.0)


def _filter(lprobs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < lprobs.shape[-1]:
        kth = lprobs.topk(top_k, dim=-1).values[:, -1:]
        lprobs = lprobs.masked_fill(lprobs < kth, float("-inf"))
    if top_p < 1.0:
        sorted_lp, order = lprobs.sort(dim=-1, descending=True)
        cum = sorted_lp.softmax(-1).cumsum(-1)
        drop = cum - sorted_lp.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        lprobs = lprobs.scatter(1, order, sorted_lp.masked_fill(drop, float("-inf")))
    return lprobs
