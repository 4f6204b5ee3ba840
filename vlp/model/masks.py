"""Attention masks, segment ids and position ids, built from lengths in batch on the device.

Sequence layout for R region slots and T text slots (L = R + 2 + T):
index 0 is [CLS], 1..R the regions (slots past an image's own count are padding),
R+1 the first [SEP], R+2.. the text (w1 .. wM [SEP]) and then padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlp.errors import VLPError
from vlp.model.config import VLPConfig


@dataclass
class Layout:
    """Per-position tensors of one batch: `mask` [B, 1, L, L] (True: query may attend to
    key), `position_ids` and `token_type_ids` [B, L], `valid` [B, L] (a real position)."""

    mask: torch.Tensor
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor
    valid: torch.Tensor


def draw_objectives(batch_size: int, s2s_prob: float, device=None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """[B] bool, True where an example trains seq2seq (VLP's --s2s_prob) rather than
    bidirectional (--bi_prob = 1 - s2s_prob)."""
    where = generator.device if generator is not None else device
    return (torch.rand(batch_size, device=where, generator=generator) < s2s_prob).to(device)


def _blocks(num_regions: torch.Tensor, text_lengths: torch.Tensor, slots: int, text_slots: int):
    device = num_regions.device
    index = torch.arange(slots + 2 + text_slots, device=device)
    n, m = num_regions[:, None], text_lengths[:, None]
    region = (index >= 1) & (index <= n)
    image = (index == 0) | region | (index == slots + 1)
    text = (index >= slots + 2) & (index < slots + 2 + m)
    return index, image, text


def build_layout(num_regions: torch.Tensor, text_lengths: torch.Tensor, region_slots: int,
                 text_slots: int, s2s: torch.Tensor, config: VLPConfig) -> Layout:
    """Masks and ids for a batch; `s2s` [B] bool picks each example's objective.

    Bidirectional: every query sees every real position. Seq2seq: every query sees the
    image block; a text query also sees text positions up to its own. Padding is never
    seen; padded queries get the image block (bi: all real positions) as in VLP, so
    their (ignored) outputs stay finite.
    """
    index, image, text = _blocks(num_regions, text_lengths, region_slots, text_slots)
    valid = image | text
    causal = index[None, :] <= index[:, None]                      # [L(q), L(k)]
    s2s_mask = image[:, None, :] | (text[:, :, None] & text[:, None, :] & causal)
    bi_mask = valid[:, None, :].expand_as(s2s_mask)
    mask = torch.where(s2s[:, None, None], s2s_mask, bi_mask)[:, None]

    # Text positions continue right after the image's own regions, so an image with all
    # its slots filled (VLP's fixed 100 regions) gets exactly VLP's position ids.
    n = num_regions[:, None]
    after_regions = index[None, :] - region_slots + n
    position_ids = torch.where(index[None, :] <= n, index[None, :], after_regions)
    position_ids = position_ids.masked_fill(~valid, 0)

    ids = config.segment_ids
    img_type = torch.where(s2s, ids["s2s"][0], ids["bi"][0])[:, None]
    txt_type = torch.where(s2s, ids["s2s"][1], ids["bi"][1])[:, None]
    zero = torch.zeros((), dtype=torch.long, device=index.device)
    token_type_ids = torch.where(image, img_type, torch.where(text, txt_type, zero))
    return Layout(mask, position_ids, token_type_ids, valid)


def check_lengths(num_regions: torch.Tensor, text_lengths: torch.Tensor, region_slots: int,
                  text_slots: int, config: VLPConfig) -> None:
    """Raise VLPError naming the count that does not fit the batch or the model."""
    if region_slots > config.max_regions:
        raise VLPError(f"{region_slots} region slots, more than the model's max_regions "
                       f"{config.max_regions}")
    if not num_regions.numel():
        return
    # One read of five numbers: on a GPU each read waits for the work queued before it.
    low_r, high_r, low_t, high_t, longest = torch.stack([
        num_regions.min(), num_regions.max(), text_lengths.min(), text_lengths.max(),
        (num_regions + text_lengths).max() + 2]).tolist()
    if low_r < 0 or high_r > region_slots:
        raise VLPError(f"num_regions must be in [0, {region_slots}] (region slots in the "
                       f"batch), got {num_regions.tolist()}")
    if low_t < 1 or high_t > text_slots:
        raise VLPError(f"text_lengths must be in [1, {text_slots}] (text slots in the batch; "
                       f"the final [SEP] counts), got {text_lengths.tolist()}")
    if longest > config.max_position_embeddings:
        raise VLPError(f"sequence of {longest} positions ([CLS] + regions + [SEP] + text) is "
                       f"longer than max_position_embeddings {config.max_position_embeddings}")


def hide_regions(layout: Layout, region_masked: torch.Tensor) -> Layout:
    """The layout with the regions `region_masked` [B, R] marks seen by no query, their
    own included: --block_masked_regions, what VLP's loader meant its masked regions'
    attention-mask columns to be (see vlp.model.masked_regions)."""
    b, r = region_masked.shape
    hidden = torch.zeros(b, layout.mask.shape[-1], dtype=torch.bool, device=region_masked.device)
    hidden[:, 1:r + 1] = region_masked
    return Layout(layout.mask & ~hidden[:, None, None, :], layout.position_ids,
                  layout.token_type_ids, layout.valid)
