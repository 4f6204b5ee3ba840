"""Region selection with bottom-up-attention semantics, and the extractor built on it.

Bottom-up attention (Anderson et al. 2018) keeps, per image, the proposals that survive
per-class NMS with a confident class: every proposal gets class-specific boxes from the
box predictor; NMS runs per class; a proposal's confidence is its best class score
among the classes where it survived; proposals with confidence >= conf are kept, at
least `min_boxes` and at most `max_boxes`, best first. Each kept region carries the
pooled RoI feature of its proposal (the box head output), the softmax over all classes
(background included), its box for its best class and that class's score.

Optionally (`agnostic_nms`, off by default as in bottom-up attention) the confident
proposals then go through one more NMS across classes on their best-class boxes, so one
object seen as two classes (a proposal scored "red circle", another "red square") keeps
only its better region; the suppressed ones rank with the fillers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vlp.data.features import RegionRecord

# Class scores below this never take part in NMS; they cannot reach any usable `conf`
# and would only make NMS slow with many classes. Such proposals can still fill up to
# min_boxes, ranked by their best class score.
CANDIDATE_FLOOR = 1e-3


@dataclass(frozen=True)
class Selection:
    """Rows of the kept proposals, best first, with their class and score."""

    index: torch.Tensor  # [N] proposal rows
    label: torch.Tensor  # [N] best non-background class
    score: torch.Tensor  # [N] that class's probability


def select_regions(class_boxes: torch.Tensor, probs: torch.Tensor, *, conf: float,
                   nms_iou: float, min_boxes: int, max_boxes: int,
                   agnostic_nms: float | None = None) -> Selection:
    """Pick regions from R proposals: class_boxes [R, C, 4], probs [R, C] (column 0 is
    the background). `agnostic_nms`: IoU of the cross-class NMS among confident
    proposals (None: none)."""
    from torchvision.ops import batched_nms, nms

    r_count = probs.shape[0]
    fg = probs[:, 1:]
    rows, cols = torch.nonzero(fg >= min(conf, CANDIDATE_FLOOR), as_tuple=True)
    pair_scores = fg[rows, cols]
    kept = batched_nms(class_boxes[rows, cols + 1].float(), pair_scores.float(), cols,
                       nms_iou)
    rows, cols, pair_scores = rows[kept], cols[kept], pair_scores[kept]

    # Each proposal's best surviving class: sort pairs by score, then stably by row, so
    # the last pair of every row is its best.
    order = torch.argsort(pair_scores, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    rows, cols, pair_scores = rows[order], cols[order], pair_scores[order]
    last = torch.ones_like(rows, dtype=torch.bool)
    last[:-1] = rows[1:] != rows[:-1]
    survived = torch.zeros(r_count, dtype=torch.bool, device=probs.device)
    survived[rows[last]] = True
    best_score, best_col = fg.max(dim=1)
    best_score, best_col = best_score.clone(), best_col.clone()
    best_score[rows[last]] = pair_scores[last]
    best_col[rows[last]] = cols[last]
    if agnostic_nms is not None:
        confident_rows = torch.nonzero(survived & (best_score >= conf), as_tuple=True)[0]
        boxes = class_boxes[confident_rows, best_col[confident_rows] + 1].float()
        kept = nms(boxes, best_score[confident_rows].float(), agnostic_nms)
        suppressed = torch.ones_like(confident_rows, dtype=torch.bool)
        suppressed[kept] = False
        survived[confident_rows[suppressed]] = False

    # Survivors first by confidence, then the rest (fillers) by their best class score.
    ranked = torch.argsort(best_score, descending=True, stable=True)
    ranked = ranked[torch.argsort((~survived[ranked]).to(torch.uint8), stable=True)]
    confident = int((survived & (best_score >= conf)).sum())
    n = min(max(confident, min_boxes), max_boxes, r_count)
    keep = ranked[:n]
    return Selection(keep, best_col[keep] + 1, best_score[keep])


@dataclass(frozen=True)
class ExtractSettings:
    conf: float = 0.2
    nms_iou: float = 0.3
    min_boxes: int = 10
    max_boxes: int = 100
    agnostic_nms: float | None = None


class RegionExtractor:
    """Detector -> RegionRecords, one per input image (batched forward)."""

    def __init__(self, model: nn.Module, settings: ExtractSettings = ExtractSettings(),
                 amp: bool = False):
        self.model = model.eval()
        self.settings = settings
        self.amp = amp

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor],
                 given_boxes: list[torch.Tensor] | None = None) -> list[RegionRecord]:
        """images: float [3, H, W] in [0, 1]; given_boxes: per image [K, 4] xyxy pixels
        (features for exactly those boxes, no detection)."""
        if not images:
            return []
        from torchvision.ops import clip_boxes_to_image

        device = self.device
        images = [im.to(device, non_blocking=True) for im in images]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        if given_boxes is not None:  # features of the box that is stored
            given_boxes = [clip_boxes_to_image(b.float(), size)
                           for b, size in zip(given_boxes, sizes)]
        with self._autocast():
            batch, _ = self.model.transform(images)
            features = self.model.backbone(batch.tensors)
            if given_boxes is None:
                proposals, _ = self.model.rpn(batch, features)
            else:
                proposals = [_scale(b.to(device, torch.float32), old, new)
                             for b, old, new in zip(given_boxes, sizes, batch.image_sizes)]
            heads = self.model.roi_heads
            pooled = heads.box_roi_pool(features, proposals, batch.image_sizes)
            feats = heads.box_head(pooled)
            logits, deltas = heads.box_predictor(feats)
        probs = torch.softmax(logits.float(), dim=-1)
        counts = [len(p) for p in proposals]
        out = []
        for i, (f, p, d, rois) in enumerate(zip(feats.float().split(counts),
                                               probs.split(counts),
                                               deltas.float().split(counts), proposals)):
            if given_boxes is None:
                out.append(self._detected(f, p, d, rois, sizes[i], batch.image_sizes[i]))
            else:
                out.append(_record(given_boxes[i].float(), f, p, _best_fg(p), sizes[i]))
        return out

    def _detected(self, feats, probs, deltas, rois, size, resized) -> RegionRecord:
        from torchvision.ops import boxes as box_ops

        coder = self.model.roi_heads.box_coder
        boxes = coder.decode(deltas, [rois]).reshape(len(rois), -1, 4)
        boxes = box_ops.clip_boxes_to_image(boxes, resized)
        s = self.settings
        pick = select_regions(boxes, probs, conf=s.conf, nms_iou=s.nms_iou,
                              min_boxes=s.min_boxes, max_boxes=s.max_boxes,
                              agnostic_nms=s.agnostic_nms)
        chosen = boxes[pick.index, pick.label]
        chosen = _scale(chosen, resized, size)
        return _record(chosen, feats[pick.index], probs[pick.index], pick.score, size)

    def _autocast(self):
        import contextlib

        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def _scale(boxes: torch.Tensor, old: tuple[int, int], new) -> torch.Tensor:
    """Boxes from an (h, w) image to a resized (h, w) one."""
    (oh, ow), (nh, nw) = old, new
    factor = boxes.new_tensor([nw / ow, nh / oh, nw / ow, nh / oh])
    return boxes * factor


def _best_fg(probs: torch.Tensor) -> torch.Tensor:
    return probs[:, 1:].max(dim=1).values


def _record(boxes, feats, probs, scores, size) -> RegionRecord:
    h, w = size
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return RegionRecord(boxes=boxes.cpu().numpy().astype(np.float32),
                        features=feats.cpu().numpy(), cls_probs=probs.cpu().numpy(),
                        scores=scores.cpu().numpy().astype(np.float32), image_w=w, image_h=h)
