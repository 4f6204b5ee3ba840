"""Tasks wrap the model and its loss: a batch in, a dict of losses out."""

from __future__ import annotations

import torch
from torch import nn

from vlp.model import MaskDraws, UnifiedVLP


HEADS = ("mlm_head", "vqa_head", "grounding_head", "centre_head")


def freeze_unused(task: nn.Module) -> None:
    """Freeze the model's heads that the task's loss never reaches (those not in
    `task.heads`: the masked-LM head in VQA, the VQA head in captioning...). DDP would
    otherwise wait for their gradients forever, and the optimizer left them as they were
    anyway, having none."""
    names = [h for h in HEADS if h not in task.heads]
    if not getattr(task, "masks_regions", False):
        names.append("pooler")  # only the masked-region loss (--vis_mask_prob) reads it
    for name in names:
        part = getattr(task.model, name, None)
        if part is not None:
            part.requires_grad_(False)


class MaskedLMTask(nn.Module):
    """VLP's pretraining and caption finetuning objective: masked LM over the caption,
    each example seq2seq or bidirectional by its own draw (s2s_prob)."""

    heads = ("mlm_head",)

    def __init__(self, model: UnifiedVLP, label_smoothing: float = 0.0,
                 drop_worst: float = 0.0, drop_after: int = 6, masks_regions: bool = False,
                 block_masked: bool = False):
        super().__init__()
        self.model = model
        self.masks_regions = masks_regions  # batches carry region_masked (--vis_mask_prob)
        self.block_masked = block_masked    # --block_masked_regions
        self.label_smoothing = label_smoothing
        self.drop_worst, self.drop_after = drop_worst, drop_after
        self.dropping = 0.0

    def set_epoch(self, epoch: int) -> None:
        """VLP's --max_drop_worst_ratio takes effect in the epochs after --drop_after."""
        self.dropping = self.drop_worst if epoch > self.drop_after else 0.0

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                s2s_draw, mask_order, mask_kind, mask_coin, mask_random_ids,
                region_masked=None) -> dict:
        s2s = s2s_draw < self.model.config.s2s_prob
        draws = MaskDraws(mask_order, mask_kind, mask_coin, mask_random_ids)
        return self.model.pretraining_loss(text_ids, text_lengths, region_features,
                                           region_locations, num_regions, s2s=s2s, draws=draws,
                                           label_smoothing=self.label_smoothing,
                                           drop_worst=self.dropping, region_masked=region_masked,
                                           block_masked=self.block_masked)

    @staticmethod
    def inputs(batch) -> dict[str, torch.Tensor]:
        names = ("text_ids", "text_lengths", "region_features", "region_locations",
                 "num_regions", "s2s_draw", "mask_order", "mask_kind", "mask_coin",
                 "mask_random_ids", "region_masked")
        return {n: getattr(batch, n) for n in names}
