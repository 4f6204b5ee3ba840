"""Masked LM: which text tokens to predict and how they are corrupted, in batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlp.model.config import RELAX_TASK_INDEX, VLPConfig


@dataclass
class MaskedText:
    """`input_ids` [B, T]: the corrupted text; `positions` [B, P]: text indices to predict
    (distinct within a row); `labels` [B, P]: their original tokens; `weights` [B, P]:
    True for a real prediction, False for a filler slot (its label is the pad id)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


@dataclass
class MaskDraws:
    """The uniform numbers masking consumes, drawn ahead (e.g. per example in a data
    loader, so the result does not depend on how examples are split into batches or
    ranks). `order` [B, T] ranks candidate positions (lowest first); `kind` and `coin`
    [B, P] in [0, 1) choose [MASK] / random / unchanged; `random_ids` [B, P] are the
    replacement tokens."""

    order: torch.Tensor
    kind: torch.Tensor
    coin: torch.Tensor
    random_ids: torch.Tensor

    @classmethod
    def sample(cls, batch: int, text_slots: int, predictions: int, vocab_size: int,
               device=None, generator: torch.Generator | None = None) -> "MaskDraws":
        # Drawn where the generator lives (a CPU generator may serve a CUDA batch).
        where = generator.device if generator is not None else device

        def uniform(*shape):
            return torch.rand(*shape, device=where, generator=generator).to(device)

        order = uniform(batch, text_slots)
        kind, coin = uniform(batch, predictions), uniform(batch, predictions)
        random_ids = torch.randint(vocab_size, (batch, predictions), device=where,
                                   generator=generator).to(device)
        return cls(order, kind, coin, random_ids)


def predictions_per_example(text_lengths: torch.Tensor, mask_prob: float, max_pred: int):
    """VLP's count: round(words * mask_prob), at least 1, at most max_pred; the final
    [SEP] is a candidate but not counted as a word."""
    words = (text_lengths - 1).clamp(min=0).to(torch.float64)
    n = torch.round(words * mask_prob).long().clamp(min=1, max=max_pred)
    return torch.minimum(n, text_lengths)


def mask_text(text_ids: torch.Tensor, text_lengths: torch.Tensor, config: VLPConfig,
              generator: torch.Generator | None = None,
              draws: MaskDraws | None = None) -> MaskedText:
    """Pick mask_prob of each example's text tokens (the final [SEP] included, padding
    never) and corrupt them 80% [MASK], 10% a random token, 10% unchanged. Random numbers
    come from `draws` when given, else from `generator`."""
    b, t = text_ids.shape
    device = text_ids.device
    slots = min(config.max_pred, t)
    if draws is None:
        draws = MaskDraws.sample(b, t, slots, config.vocab_size, device, generator)
    n_pred = predictions_per_example(text_lengths, config.mask_prob, config.max_pred)
    candidate = torch.arange(t, device=device)[None, :] < text_lengths[:, None]
    # A random order over candidates, padding sorted last: the first n_pred are picked.
    keys = draws.order[:, :t].masked_fill(~candidate, 2.0)
    # A stable sort, so ties (never among uniform floats) cannot depend on the backend.
    positions = keys.argsort(dim=1, stable=True)[:, :slots]
    weights = torch.arange(slots, device=device)[None, :] < n_pred[:, None]
    original = text_ids.gather(1, positions)
    labels = original.masked_fill(~weights, config.pad_token_id)

    kind, coin = draws.kind[:, :slots], draws.coin[:, :slots]
    to_mask = weights & (kind < 0.8)
    to_random = weights & (kind >= 0.8) & (coin < 0.5)
    random_ids = draws.random_ids[:, :slots]
    new = torch.where(to_mask, config.mask_token_id, torch.where(to_random, random_ids, original))
    # Positions are distinct within a row, so the scatter writes each slot once.
    return MaskedText(text_ids.scatter(1, positions, new), positions, labels, weights)


# A token outside the output vocabulary: exp(-1e4) is 0 in every float type, and the
# value stays finite through temperature and penalties.
OUTSIDE_SCORE = -1e4


class MaskedLMHead(nn.Module):
    """BERT's prediction head: dense -> activation -> LayerNorm, then the word embedding
    matrix (tied, not copied) plus an output-only bias.

    With relax_projection P > 1 (VLP's --relax_projection) the dense layer makes P
    projections, the LayerNorm normalises all P together (VLP's did), and each example
    keeps the projection of its task index (see RELAX_TASK_INDEX; seq2seq when none)."""

    def __init__(self, config: VLPConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.projections = max(config.relax_projection, 1)
        width = config.hidden_size * self.projections
        self.dense = nn.Linear(config.hidden_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.act = F.gelu if config.hidden_act == "gelu" else F.relu
        # A list keeps the embedding out of this module's parameters and state dict.
        self._tied = [word_embeddings]
        self.restrict(config.output_vocab)

    def restrict(self, ids: list[int] | None) -> None:
        """Score only the tokens `ids` (config.output_vocab; None: every token). Kept as
        buffers outside the state dict: the config carries the list."""
        vocab = self.bias.shape[0]
        device = self.bias.device
        kept = None if ids is None else torch.tensor(ids, dtype=torch.long, device=device)
        index = None
        if kept is not None:
            # A token's row in the restricted scores; -1 outside them.
            index = torch.full((vocab,), -1, dtype=torch.long, device=device)
            index[kept] = torch.arange(len(ids), device=device)
        self.register_buffer("kept", kept, persistent=False)
        self.register_buffer("row_of", index, persistent=False)
        self.ids = ids

    def row(self, token: int) -> int:
        """A token id's row in `kept_only` scores."""
        return token if self.ids is None else self.ids.index(token)

    def kept_rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The output layer's weight and bias rows of the kept tokens (None without an
        output vocabulary). Taken once for many calls of `forward` (a decoding's steps),
        their gradient flows back to the tables once rather than once per call."""
        if self.kept is None:
            return None
        return self._tied[0].weight.index_select(0, self.kept), self.bias.index_select(0, self.kept)

    def forward(self, hidden: torch.Tensor, task_idx: torch.Tensor | int | None = None,
                kept_only: bool = False,
                output_rows: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Scores over the vocabulary; with an output vocabulary, tokens outside it score
        -1e4 (nothing after a softmax), or with `kept_only` only its tokens are scored,
        in its order (labels through `rows`). `output_rows`: `kept_rows()` taken beforehand."""
        x = self.LayerNorm(self.act(self.dense(hidden)))
        if self.projections > 1:
            x = pick_projection(x, self.projections, task_idx)
        weight = self._tied[0].weight
        if self.kept is None:
            return F.linear(x, weight, self.bias)
        scores = F.linear(x, *(output_rows if output_rows is not None else self.kept_rows()))
        if kept_only:
            return scores
        # Only the kept rows are multiplied; the others are filled in.
        full = scores.new_full((*scores.shape[:-1], weight.shape[0]), OUTSIDE_SCORE)
        return full.index_copy(-1, self.kept, scores)

    def rows(self, labels: torch.Tensor) -> torch.Tensor:
        """Token ids -> their rows in `kept_only` scores (ids without an output
        vocabulary)."""
        return labels if self.row_of is None else self.row_of[labels]


def pick_projection(x: torch.Tensor, projections: int, task_idx: torch.Tensor | int | None):
    """[B, ..., P * H] -> [B, ..., H]: projection `task_idx` (an int, or [B] per example)."""
    x = x.unflatten(-1, (projections, -1))
    if task_idx is None:
        task_idx = RELAX_TASK_INDEX["s2s"]
    if isinstance(task_idx, int):
        return x[..., task_idx, :]
    index = task_idx.view(-1, *[1] * (x.dim() - 1)).expand(*x.shape[:-2], 1, x.shape[-1])
    return x.gather(-2, index).squeeze(-2)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   label_smoothing: float = 0.0, drop_worst: float = 0.0, pad_id: int = 0):
    """VLP's masked-LM loss: per prediction the cross-entropy, or with `label_smoothing`
    the KL divergence to VLP's smoothed target (smoothed_kl), summed over the real
    predictions (filler slots weigh nothing) and divided by their count + 1e-5, as VLP.

    `drop_worst` (VLP's --max_drop_worst_ratio) leaves out that share of the batch's
    examples, those with the largest summed loss, and divides by the rest's predictions;
    int(B * (1 - drop_worst)) examples are kept, as VLP counted them."""
    flat_logits, flat_labels = logits.flatten(0, 1).float(), labels.flatten()
    if label_smoothing > 0.0:
        per_slot = smoothed_kl(flat_logits, flat_labels, label_smoothing, pad_id)
    else:
        per_slot = F.cross_entropy(flat_logits, flat_labels, reduction="none")
    w = weights.to(per_slot.dtype)
    per_slot = per_slot.view(labels.shape) * w
    if drop_worst > 0.0:
        keep = torch.topk(per_slot.sum(1), int(labels.shape[0] * (1.0 - drop_worst)),
                          largest=False).indices
        per_slot, w = per_slot[keep], w[keep]
    # VLP's denominator: the predictions kept plus 1e-5 (no division by zero).
    return per_slot.sum() / (w.sum() + 1e-5)


def smoothed_kl(logits: torch.Tensor, labels: torch.Tensor, smoothing: float,
                pad_id: int = 0) -> torch.Tensor:
    """KL(q || softmax(logits)) per row [N], q VLP's smoothed target: 1 - smoothing on the
    label, smoothing / (V - 2) on every other token but padding, nothing on padding; 0 for
    a row labelled padding. Computed in closed form (no [N, V] target table):
    sum q log q - (1 - s) log p[label] - s / (V - 2) (sum log p - log p[label] - log p[pad])."""
    vocab = logits.shape[-1]
    confidence, spread = 1.0 - smoothing, smoothing / (vocab - 2)
    entropy = _xlogx(confidence) + (vocab - 2) * _xlogx(spread)
    logp = F.log_softmax(logits, dim=-1)
    at_label = logp.gather(-1, labels[:, None]).squeeze(-1)
    others = logp.sum(-1) - at_label - logp[:, pad_id]
    kl = entropy - confidence * at_label - spread * others
    return kl.masked_fill(labels == pad_id, 0.0)


def _xlogx(x: float) -> float:
    return x * math.log(x) if x > 0.0 else 0.0
