"""How a model with a localization head scores an image's regions as an expression's
referent (vlp.train.grounding trains the heads; eval, the bundle and training share this)."""

from __future__ import annotations

import torch

from vlp.errors import VLPError
from vlp.model.unified import UnifiedVLP

# The head each objective trains: its config key and its parameters' name.
HEAD = {"regions": ("grounding", "grounding_head"), "centre": ("grounding_centre", "centre_head")}


def centre_scores(centres: torch.Tensor, region_centres: torch.Tensor,
                  num_regions: torch.Tensor) -> torch.Tensor:
    """[B, R] float32 region scores from predicted centres [B, 2]: minus the L1 distance of
    each region's centre [B, R, 2] from the prediction; the lowest float32 value on the
    slots past an image's own regions."""
    scores = -(region_centres.float() - centres.float()[:, None]).abs().sum(-1)
    slot = torch.arange(scores.shape[1], device=scores.device)[None, :]
    return scores.masked_fill(slot >= num_regions[:, None], torch.finfo(torch.float32).min)


def region_scores(model: UnifiedVLP, objective: str, text_ids, text_lengths, region_features,
                  region_locations, num_regions, region_centres) -> tuple[torch.Tensor, dict]:
    """[B, R] scores of each region as the expression's referent by `objective`'s head, and
    what else it predicted ({"centre": [B, 2]} for the centre head)."""
    if objective == "centre":
        centres = referent_centres(model, text_ids, text_lengths, region_features,
                                   region_locations, num_regions)
        return centre_scores(centres, region_centres, num_regions), {"centre": centres}
    bidirectional = torch.zeros(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
    hidden = model(text_ids, text_lengths, region_features, region_locations, num_regions,
                   bidirectional)
    return model.grounding_scores(hidden, region_features.shape[1], num_regions), {}


def referent_centres(model: UnifiedVLP, text_ids, text_lengths, region_features,
                     region_locations, num_regions) -> torch.Tensor:
    """[B, 2] the referents' centres, the expressions read left to right (seq2seq)."""
    s2s = torch.ones(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
    hidden = model(text_ids, text_lengths, region_features, region_locations, num_regions, s2s)
    return model.referent_centres(hidden, region_features.shape[1], text_lengths)


def choose_objective(model: UnifiedVLP, objective: str = "auto") -> str:
    """The objective whose head scores regions: `objective`, or with "auto" the region head
    where the model has one, else the centre head."""
    if objective == "auto":
        objective = "regions" if model.config.grounding or not model.config.grounding_centre \
            else "centre"
    if not getattr(model.config, HEAD[objective][0]):
        raise VLPError(f"the model has no {objective} localization head: train one with "
                       f"--tasks refcoco --grounding_objective {objective}")
    return objective
