"""Masked LM: which text tokens to predict and how they are corrupted, in batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlp.model.config import VLPConfig


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


class MaskedLMHead(nn.Module):
    """BERT's prediction head: dense -> activation -> LayerNorm, then the word embedding
    matrix (tied, not copied) plus an output-only bias."""

    def __init__(self, config: VLPConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.act = F.gelu if config.hidden_act == "gelu" else F.relu
        # A list keeps the embedding out of this module's parameters and state dict.
        self._tied = [word_embeddings]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.LayerNorm(self.act(self.dense(hidden)))
        return F.linear(x, self._tied[0].weight, self.bias)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   label_smoothing: float = 0.0, drop_worst: float = 0.0):
    """Cross-entropy averaged over real predictions (filler slots weigh nothing).

    `drop_worst` (VLP's --max_drop_worst_ratio) leaves out that share of the batch's
    examples, those with the largest summed loss, and averages over the rest's
    predictions; int(B * (1 - drop_worst)) examples are kept, as VLP counted them."""
    per_slot = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none",
                               label_smoothing=label_smoothing).view(labels.shape)
    w = weights.to(per_slot.dtype)
    per_slot = per_slot * w
    if drop_worst > 0.0:
        keep = torch.topk(per_slot.sum(1), int(labels.shape[0] * (1.0 - drop_worst)),
                          largest=False).indices
        per_slot, w = per_slot[keep], w[keep]
    return per_slot.sum() / w.sum().clamp(min=1.0)
