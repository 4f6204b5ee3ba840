"""Localization from text (`--tasks refcoco`): RefCOCO, RefCOCO+ and RefCOCOg expressions.

Two objectives (`--grounding_objective`):

- regions (default): each example is one expression with its image's regions,
  bidirectional as in VQA. Every region slot's output goes through the localization head
  to one score; the loss is the cross-entropy of the softmax over the image's regions
  against a target spread evenly over the regions whose box overlaps the referent at IoU
  >= 0.5 (the regions UNITER and ViLBERT train on). An expression with no such region
  teaches nothing and is left out of the loss; the run says how many there are, since
  they bound the accuracy with these regions.
- centre: the expression is read left to right (seq2seq, as captions are written) and its
  final [SEP], the one position that has seen all of it, regresses the referent's box
  centre (x, y over the image's size; CENTRE_LOSS_SCALE times the L1 error). The region
  whose centre is nearest the prediction is the answer. Trained so, the model learns to
  carry where a named shape is to the position that follows its name, which a captioner
  finetuned from it then uses for its place words (docs/experiments.md).

`--src_file` names the refs(<split_by>).p file, with instances.json beside it.
"""

from __future__ import annotations

import torch
from torch import nn

from vlp.data.captions import Caption
from vlp.data.grounding import POSITIVE_IOU, Expression, read_expressions
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.model.grounding import HEAD, referent_centres, region_scores

# The centre objective's loss is this many times |dx| + |dy|: missing by a tenth of the
# image in x and in y then costs 0.8, as much as a cross-entropy of the other tasks.
CENTRE_LOSS_SCALE = 4.0


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


def with_grounding_head(model: UnifiedVLP, objective: str = "regions") -> UnifiedVLP:
    """The model with the objective's head: its own if it has one, else a new random one."""
    key = HEAD[objective][0]
    return model if getattr(model.config, key) else model.grown(**{key: True})


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
    """The loss of `objective` ("regions" or "centre", HEAD's keys) on a batch of
    expressions."""

    def __init__(self, model: UnifiedVLP, objective: str = "regions"):
        super().__init__()
        self.model = model
        self.objective = objective
        self.heads = (HEAD[objective][1],)

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                region_iou, referent_centre) -> dict:
        if self.objective == "centre":
            predicted = referent_centres(self.model, text_ids, text_lengths, region_features,
                                         region_locations, num_regions)
            error = (predicted - referent_centre.float()).abs().sum(-1).mean()
            return {"loss": CENTRE_LOSS_SCALE * error, "centre_error": error.detach()}
        scores, _ = region_scores(self.model, "regions", text_ids, text_lengths,
                                  region_features, region_locations, num_regions, None)
        loss, learnable = grounding_loss(scores, region_iou[:, :scores.shape[1]])
        return {"loss": loss, "learnable": learnable.float() / max(len(text_ids), 1)}

    @staticmethod
    def inputs(batch) -> dict:
        names = ("text_ids", "text_lengths", "region_features", "region_locations",
                 "num_regions", "region_iou", "referent_centre")
        return {n: getattr(batch, n) for n in names}
