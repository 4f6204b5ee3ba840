"""Localization from text (`--tasks refcoco`): RefCOCO, RefCOCO+ and RefCOCOg expressions.

Each example is one expression with its image's regions, bidirectional as in VQA. Every
region slot's output goes through the localization head to one score; the loss is the
cross-entropy of the softmax over the image's regions against a target spread evenly
over the regions whose box overlaps the referent at IoU >= 0.5 (the regions UNITER and
ViLBERT train on). An expression with no such region teaches nothing and is left out of
the loss; the run says how many there are, since they bound the accuracy with these
regions. `--src_file` names the refs(<split_by>).p file, with instances.json beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.data.captions import Caption
from vlp.data.grounding import POSITIVE_IOU, Expression, read_expressions
from vlp.errors import VLPError
from vlp.model import UnifiedVLP


def load_expressions(args) -> tuple[list[Caption], list[Expression]]:
    """The expressions of --split in each --src_file, as Captions (store key, ref id,
    text) and Expressions (with the referent's box)."""
    expressions = [e for path in args.src_file for e in read_expressions(path, args.split)]
    if not expressions:
        raise VLPError(f"--src_file {' '.join(args.src_file)} holds no expression of "
                       f"--split {' '.join(args.split)}")
    if args.use_num_imgs > 0:
        keep = set(list(dict.fromkeys(e.image_key for e in expressions))[:args.use_num_imgs])
        expressions = [e for e in expressions if e.image_key in keep]
    return [Caption(e.image_key, e.ref_id, e.text) for e in expressions], expressions


def with_grounding_head(model: UnifiedVLP) -> UnifiedVLP:
    """The model with a localization head: its own if it has one, else a new random one."""
    return model if model.config.grounding else model.grown(grounding=True)


def grounding_loss(scores: torch.Tensor, iou: torch.Tensor,
                   threshold: float = POSITIVE_IOU) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of softmax(scores) [B, R] against the even spread over the
    regions at IoU >= threshold, over the examples that have one (0 when none does, still
    joined to the scores' graph, as DDP needs); and how many do."""
    positive = (iou >= threshold).float()
    counts = positive.sum(1)
    has = (counts > 0).float()
    target = positive / counts.clamp(min=1)[:, None]
    per_example = -(target * scores.log_softmax(-1)).sum(1)
    return (per_example * has).sum() / has.sum().clamp(min=1), has.sum()


class GroundingTask(nn.Module):
    heads = ("grounding_head",)

    def __init__(self, model: UnifiedVLP):
        super().__init__()
        self.model = model

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                region_iou) -> dict:
        scores = self.scores(text_ids, text_lengths, region_features, region_locations,
                             num_regions)
        loss, learnable = grounding_loss(scores, region_iou[:, :scores.shape[1]])
        return {"loss": loss, "learnable": learnable.float() / max(len(text_ids), 1)}

    def scores(self, text_ids, text_lengths, region_features, region_locations, num_regions):
        """[B, R] region scores; every example bidirectional (the expression and every
        region see each other)."""
        bidirectional = torch.zeros(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
        hidden = self.model(text_ids, text_lengths, region_features, region_locations,
                            num_regions, bidirectional)
        return self.model.grounding_scores(hidden, region_features.shape[1], num_regions)

    @staticmethod
    def inputs(batch) -> dict:
        names = ("text_ids", "text_lengths", "region_features", "region_locations",
                 "num_regions", "region_iou")
        return {n: getattr(batch, n) for n in names}
