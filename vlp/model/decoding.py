"""UniLM-style decoding steps: the caption grows one token at a time in the seq2seq layout.

Step t feeds the previous token (at text position t-1) and a [MASK] at position t; the
[MASK]'s output scores token t. With `CachedSteps` the image block's and each real token's
keys/values go into a per-layer cache, so a step costs two new positions; `FullSteps`
recomputes the whole sequence every step (for checking and benchmarking; same result).
Both expose `step(prev_tokens) -> logits [rows, vocab]` and `reorder(index)` (keep rows
`index`, as beams do), and nothing else: the search strategies live in vlp.decode.

VLP's SCST decoded with the attention mask and segment ids of the training example
(`mask_lengths`: that example's text length, its final [SEP] included): text positions
from that length on were the example's padding, whose mask rows see the image block
only and whose segment id is 0. `CachedSteps(mask_lengths=...)` decodes that way.
"""

from __future__ import annotations

import torch

from vlp.errors import VLPError


def _check_fit(model, num_regions_slots: int, max_length: int) -> None:
    c = model.config
    if num_regions_slots > c.max_regions:
        raise VLPError(f"{num_regions_slots} region slots, more than the model's max_regions "
                       f"{c.max_regions}")
    longest = num_regions_slots + 2 + max_length
    if longest > c.max_position_embeddings:
        raise VLPError(f"{num_regions_slots} regions + 2 + {max_length} tokens = {longest} "
                       f"positions; the model has {c.max_position_embeddings} "
                       "(lower --max_tgt_length)")


class CachedSteps:
    """Decoding with the per-layer key/value cache of the model's encoder."""

    def __init__(self, model, region_features, region_locations, num_regions, max_length: int,
                 mask_lengths: torch.Tensor | None = None):
        _check_fit(model, region_features.shape[1], max_length)
        model._check_regions(region_features, region_locations)
        self.model, self.c = model, model.config
        self.mask_lengths = mask_lengths
        b, r = region_features.shape[:2]
        device = region_features.device
        self.slots = r
        self.num_regions = num_regions
        index = torch.arange(r + 2, device=device)
        n = num_regions[:, None]
        self.prefix_valid = (index == 0) | ((index >= 1) & (index <= n)) | (index == r + 1)
        positions = torch.where(index <= n, index, n + 1).masked_fill(~self.prefix_valid, 0)
        img_type, self.text_type = self.c.segment_ids["s2s"]
        e = model.embeddings
        ends = torch.tensor([self.c.cls_token_id, self.c.sep_token_id], device=device).expand(b, 2)
        words = e.words(ends, positions[:, [0, -1]])
        regions = model.region(region_features, region_locations.to(region_features.dtype))
        slots = torch.cat([words[:, :1], regions.to(words.dtype), words[:, 1:]], dim=1)
        x = e(slots, torch.full_like(positions, img_type))
        mask = self.prefix_valid[:, None, None, :].expand(b, 1, r + 2, r + 2)
        self.cache = model.new_cache()
        model.encoder(x, mask, self.cache)
        self.t = 0  # text tokens fed so far
        # The output rows are taken once for all steps and, under autograd (SCST's
        # samples), each step's word lookups give the table a sparse gradient: the steps'
        # gradients then reach the vocabulary-sized tables once, not once per step.
        self.output_rows = model.mlm_head.kept_rows()

    def step(self, prev_tokens: torch.Tensor | None) -> torch.Tensor:
        """Scores [rows, vocab] of text token t given tokens < t (`prev_tokens` is token
        t-1; None at t = 0)."""
        c, e = self.c, self.model.embeddings
        rows = self.prefix_valid.shape[0]
        device = self.prefix_valid.device
        mask_tok = torch.full((rows, 1), c.mask_token_id, dtype=torch.long, device=device)
        ids = mask_tok if prev_tokens is None else torch.cat([prev_tokens[:, None], mask_tok], 1)
        new = ids.shape[1]
        first_text = self.t if prev_tokens is None else self.t - 1
        text_index = first_text + torch.arange(new, device=device)
        positions = self.num_regions[:, None] + 2 + text_index
        segments = torch.full_like(ids, self.text_type)
        cached_text = len(self.cache) - (self.slots + 2)
        keys = torch.cat([self.prefix_valid,
                          torch.ones(rows, cached_text + new, dtype=torch.bool, device=device)], 1)
        mask = keys[:, None, None, :].repeat(1, 1, new, 1)
        if new == 2:
            mask[:, :, 0, -1] = False  # the previous token does not see the [MASK] after it
        if self.mask_lengths is not None:
            padding = text_index[None, :] >= self.mask_lengths[:, None]      # [rows, new]
            segments = segments.masked_fill(padding, 0)
            mask[:, 0, :, self.slots + 2:] &= ~padding[:, :, None]
        x = e(e.words(ids, positions, sparse=torch.is_grad_enabled()), segments)
        hidden = self.model.encoder(x, mask, self.cache, keep=new - 1)
        self.t += 1
        return self.model.mlm_logits(hidden[:, -1], output_rows=self.output_rows)

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)
        self.prefix_valid = self.prefix_valid.index_select(0, index)
        self.num_regions = self.num_regions.index_select(0, index)
        if self.mask_lengths is not None:
            self.mask_lengths = self.mask_lengths.index_select(0, index)


class FullSteps:
    """The same steps by running the model on [CLS] regions [SEP] tokens [MASK] each time."""

    def __init__(self, model, region_features, region_locations, num_regions, max_length: int):
        _check_fit(model, region_features.shape[1], max_length)
        self.model = model
        self.inputs = [region_features, region_locations, num_regions]
        self.tokens = torch.zeros(region_features.shape[0], 0, dtype=torch.long,
                                  device=region_features.device)

    def step(self, prev_tokens: torch.Tensor | None) -> torch.Tensor:
        if prev_tokens is not None:
            self.tokens = torch.cat([self.tokens, prev_tokens[:, None]], 1)
        rows, t = self.tokens.shape
        mask_tok = torch.full((rows, 1), self.model.config.mask_token_id,
                              dtype=torch.long, device=self.tokens.device)
        text = torch.cat([self.tokens, mask_tok], 1)
        lengths = torch.full((rows,), t + 1, dtype=torch.long, device=text.device)
        feats, locs, n = self.inputs
        hidden = self.model(text, lengths, feats, locs, n)
        return self.model.mlm_logits(hidden[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        self.inputs = [x.index_select(0, index) for x in self.inputs]
        self.tokens = self.tokens.index_select(0, index)


def decoding_steps(model, region_features, region_locations, num_regions, max_length: int,
                   use_cache: bool = True, mask_lengths: torch.Tensor | None = None):
    if mask_lengths is not None:
        if not use_cache:
            raise VLPError("decoding with a training example's mask (mask_lengths) needs the "
                           "key/value cache (use_cache=True)")
        return CachedSteps(model, region_features, region_locations, num_regions, max_length,
                           mask_lengths)
    cls = CachedSteps if use_cache else FullSteps
    return cls(model, region_features, region_locations, num_regions, max_length)
