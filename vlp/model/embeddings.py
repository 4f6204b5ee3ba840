"""Input embeddings: BERT's word/position/segment tables and VLP's region MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.errors import VLPError
from vlp.model.config import VLPConfig
from vlp.model.dropout import Dropout


class Embeddings(nn.Module):
    """BERT's embedding tables. `forward` takes the slot vectors (word + position, or a
    region's feature + location embedding), adds the segment embedding, then LayerNorm and
    dropout, as VLP did for every position."""

    def __init__(self, config: VLPConfig):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def words(self, ids: torch.Tensor, positions: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """Word + position embeddings. `sparse` gives the word table a sparse gradient: for
        a graph that also uses the table densely (the tied MLM output layer), whose dense
        gradient then takes the looked-up rows without a second vocabulary-sized table
        of zeros being filled for them."""
        table = self.word_embeddings
        return (F.embedding(ids, table.weight, table.padding_idx, sparse=sparse)
                + self.position_embeddings(positions))

    def forward(self, slots: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(slots + self.token_type_embeddings(token_type_ids)))


class RegionEmbedding(nn.Module):
    """VLP's region slots: feature D -> Linear(D, D') -> ReLU -> Linear(D', H) -> ReLU ->
    Dropout, plus box+class vector (C+6) -> Linear -> ReLU -> Dropout. The sum takes the
    place of a word's word + position embedding. A model with region_box_frequencies adds
    a third term: the box's sine/cosine features (the locations' last region_box_dim
    columns) -> Linear -> ReLU -> Dropout.

    With region_location "normed" the sum of the first two is layer-normalised, and the box
    columns (centre, size and their sines/cosines) -> Linear -> LayerNorm are added to it:
    in VLP's vector the box is 6 of C+6 numbers and adds little to the slot, here it
    weighs as much as what the region shows."""

    def __init__(self, config: VLPConfig):
        super().__init__()
        h, d, dh = config.hidden_size, config.region_feature_dim, config.region_hidden_size
        p = config.hidden_dropout_prob
        self.feature = nn.Sequential(nn.Linear(d, dh), nn.ReLU(), nn.Linear(dh, h), nn.ReLU(),
                                     Dropout(p))
        self.location = nn.Sequential(nn.Linear(config.region_loc_dim, h), nn.ReLU(),
                                      Dropout(p))
        self.loc_dim = config.region_loc_dim
        self.box = self.what_norm = None
        if config.region_location == "normed":
            eps = config.layer_norm_eps
            self.what_norm = nn.LayerNorm(h, eps=eps)
            self.box = nn.Sequential(nn.Linear(config.region_box_dim, h), nn.LayerNorm(h, eps=eps))
        elif config.region_box_dim:
            self.box = nn.Sequential(nn.Linear(config.region_box_dim, h), nn.ReLU(), Dropout(p))

    def forward(self, features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        what, where = self.parts(features, locations)
        return what + where

    def parts(self, features: torch.Tensor, locations: torch.Tensor):
        """The two terms of the slot apart: the feature embedding and the location
        embedding (with the box sines/cosines' term, when the model has them), VLP's
        vis_feats and vis_pe, which its masked-region loss compares. With region_location
        "normed": what the region shows (feature and box+class vector, normalised) and
        where its box is."""
        if self.box is None:
            return self.feature(features), self.location(locations)
        box = self.box(locations[..., self.loc_dim:])
        what = self.feature(features)
        located = self.location(locations[..., :self.loc_dim])
        if self.what_norm is not None:
            return self.what_norm(what + located), box
        return what, located + box

    @torch.no_grad()
    def init_from_fc7(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Start the first feature layer from a detector's fc7, as VLP did with Detectron's."""
        first = self.feature[0]
        if tuple(weight.shape) != tuple(first.weight.shape) or tuple(bias.shape) != tuple(first.bias.shape):
            raise VLPError(f"fc7 weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not "
                           f"fit the region layer {tuple(first.weight.shape)} (out, in): set "
                           "region_hidden_size and region_feature_dim to the detector's")
        first.weight.copy_(weight)
        first.bias.copy_(bias)
