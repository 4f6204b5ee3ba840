"""VLP's masked regions (--vis_mask_prob): the loss on the regions an example masks.

A masked region enters the encoder as a zero slot (its segment embedding only). VLP's
loader also meant to keep every position from attending to it, but its line
`input_mask[:, vis_masked_pos].fill_(0)` filled a copy of the mask, so in VLP the zero slots
stayed visible; --block_masked_regions hides them as that line meant to.

The loss asks, for each masked region, which of the example's masked regions' feature
embeddings goes with its location embedding plus the pooled [CLS]: a softmax over the
masked regions, cross-entropy on the matching one, averaged over the masked regions and
then over the examples (VLP's "Selfie-like pretext" loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the [CLS] output."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def masked_region_loss(feature: torch.Tensor, location: torch.Tensor, pooled: torch.Tensor,
                       region_masked: torch.Tensor) -> torch.Tensor:
    """`feature`, `location` [B, R, H]: each region's feature and location embeddings;
    `pooled` [B, H]; `region_masked` [B, R] bool. Examples hiding no region weigh nothing
    (VLP hid the same number in every example)."""
    count = region_masked.sum(1)
    k = int(count.max())
    if k == 0:
        # Zero, through the pooler still, so that every rank's graph has the same parameters.
        return pooled.float().sum() * 0.0
    # Each row's hidden regions first, in index order (the loss does not depend on it).
    picked = (~region_masked).to(torch.uint8).argsort(dim=1, stable=True)[:, :k]
    real = torch.arange(k, device=count.device)[None, :] < count[:, None]

    def gather(x):
        return x.gather(1, picked[..., None].expand(-1, -1, x.shape[-1]))

    query = gather(location) + pooled[:, None]
    scores = torch.matmul(query, gather(feature).transpose(1, 2)).float()   # [B, k, k]
    # A real row's softmax runs over the real columns only; filler rows stay finite.
    scores = scores.masked_fill(real[:, :, None] & ~real[:, None, :], float("-inf"))
    matched = F.log_softmax(scores, -1).diagonal(dim1=1, dim2=2).masked_fill(~real, 0.0)
    per_example = -matched.sum(1) / count.clamp(min=1)
    hiding = (count > 0).to(per_example.dtype)
    return (per_example * hiding).sum() / hiding.sum()
