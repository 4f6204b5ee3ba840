"""Self-critical sequence training: sample captions, reward them with CIDEr-D, push up the
ones that beat a baseline (Rennie et al. 2017; VLP's SCST, and the "mean of the other
samples" baseline of later work).

The standard reward scores each sample against all of its image's references, with
document frequencies computed once from the training references (saved beside the run),
on words from coco-caption's Java-free PTB tokenizer. `vlp_compat` reproduces VLP's
instead: one reference (the example's caption), document frequencies from the batch,
on word-piece ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlp.decode import CaptionGenerator, SearchSettings
from vlp.errors import VLPError

BASELINES = ("greedy", "mean")
DF_FILE = "cider_document_frequency.json"


class CiderReward:
    """CIDEr-D of captions (word strings) against each image's tokenized references."""

    def __init__(self, references: dict[str, list[str]], df):
        self.references, self.df = references, df

    @classmethod
    def from_captions(cls, captions, save_dir: Path | None = None) -> "CiderReward":
        """References per image from (image_key, text) captions; document frequencies from
        all of them (read back from `save_dir` when an earlier run saved them)."""
        from coco_caption.cider import DocumentFrequency, document_frequency
        from coco_caption.ptb import tokenize_lines

        by_image: dict[str, list[str]] = {}
        texts = [c.text for c in captions]
        for c, words in zip(captions, tokenize_lines(texts)):
            by_image.setdefault(c.image_key, []).append(words)
        empty = [k for k, refs in by_image.items() if not any(r.strip() for r in refs)]
        if empty:
            raise VLPError(f"image {empty[0]} has no reference caption with words "
                           f"({len(empty)} such images); SCST needs references for every image")
        path = Path(save_dir) / DF_FILE if save_dir is not None else None
        if path is not None and path.is_file():
            data = json.loads(path.read_text())
            df = DocumentFrequency({tuple(g.split(" ")): c for g, c in data["counts"].items()},
                                   data["log_num_images"], data["n"])
        else:
            df = document_frequency(list(by_image.values()))
            if path is not None:
                path.write_text(json.dumps({"n": df.n, "log_num_images": df.log_num_images,
                                            "counts": {" ".join(g): c for g, c in df.counts.items()}}))
        return cls(by_image, df)

    def __call__(self, image_keys: list[str], captions: list[str]) -> np.ndarray:
        from coco_caption.cider import cider_d
        from coco_caption.ptb import tokenize_lines

        missing = [k for k in image_keys if k not in self.references]
        if missing:
            raise VLPError(f"image {missing[0]} has no reference captions for the SCST reward")
        return cider_d(tokenize_lines(captions), [self.references[k] for k in image_keys], self.df)


def vlp_compat_reward(reference_ids: list[list[int]], sample_ids: list[list[int]]) -> np.ndarray:
    """VLP's reward: CIDEr-D of each sample against its one reference caption, on
    word-piece ids, with document frequencies from this batch's references."""
    from coco_caption.cider import cider_d, document_frequency

    refs = [[" ".join(map(str, r))] for r in reference_ids]
    return cider_d([" ".join(map(str, s)) for s in sample_ids], refs, document_frequency(refs))


def leave_one_out(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's baseline: the mean reward of its image's other k-1 samples."""
    grouped = rewards.view(-1, k)
    return ((grouped.sum(1, keepdim=True) - grouped) / (k - 1)).reshape(-1)


def policy_loss(log_probs: torch.Tensor, lengths: torch.Tensor, advantage: torch.Tensor):
    """-sum log p * (r - b) over each sample's tokens through its end token, averaged
    over those tokens (positions past a sample's own length weigh nothing)."""
    steps = torch.arange(log_probs.shape[1], device=log_probs.device)
    mask = (steps[None, :] < lengths[:, None]).to(log_probs.dtype)
    return -(log_probs * mask * advantage[:, None].to(log_probs.dtype)).sum() / mask.sum().clamp(min=1)


class ScstTask(nn.Module):
    """Samples `samples` captions per image in train mode (K/V cache, graph kept), rewards
    them, and returns the policy-gradient loss with the reward figures."""

    unused_parts = ("vqa_head",)

    def __init__(self, model, tokenizer, reward: CiderReward | None, settings: SearchSettings,
                 baseline: str = "greedy", samples: int = 1, vlp_compat: bool = False):
        super().__init__()
        if baseline not in BASELINES:
            raise VLPError(f"--scst_baseline must be one of {BASELINES}, got {baseline!r}")
        if baseline == "mean" and samples < 2:
            raise VLPError("--scst_baseline mean needs --scst_samples of at least 2")
        self.model, self.tokenizer, self.reward = model, tokenizer, reward
        self.settings, self.baseline, self.samples = settings, baseline, samples
        self.vlp_compat = vlp_compat

    def forward(self, region_features, region_locations, num_regions, text_ids, text_lengths,
                image_keys) -> dict:
        gen = CaptionGenerator(self.model, self.settings)
        k = self.samples
        expand = torch.arange(region_features.shape[0], device=region_features.device).repeat_interleave(k)
        drawn = gen.sample(region_features[expand], region_locations[expand], num_regions[expand])
        sample_ids = [row[:n - 1] if row[n - 1] == self.settings.eos_id else row[:n]
                      for row, n in zip(drawn.tokens.tolist(), drawn.lengths.tolist())]
        keys = [image_keys[i] for i in expand.tolist()]
        rewards = self._score(keys, sample_ids, text_ids, text_lengths, expand)
        if self.baseline == "mean":
            base = leave_one_out(rewards, k)
        else:
            greedy = gen.generate(region_features, region_locations, num_regions)
            ids = [h.tokens for h in greedy]
            base = self._score(list(image_keys), ids, text_ids, text_lengths,
                               torch.arange(len(ids), device=expand.device))[expand]
        loss = policy_loss(drawn.log_probs, drawn.lengths, rewards - base)
        return {"loss": loss, "reward": rewards.mean().detach(), "baseline": base.mean().detach(),
                "sample_len": drawn.lengths.float().mean().detach()}

    def _score(self, keys, sample_ids, text_ids, text_lengths, rows) -> torch.Tensor:
        if self.vlp_compat:
            refs = [text_ids[i, :text_lengths[i] - 1].tolist() for i in rows.tolist()]
            values = vlp_compat_reward(refs, sample_ids)
        else:
            values = self.reward(keys, [self._words(ids) for ids in sample_ids])
        return torch.as_tensor(values, dtype=torch.float32, device=text_ids.device)

    def _words(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    @staticmethod
    def inputs(batch) -> dict:
        return {"region_features": batch.region_features,
                "region_locations": batch.region_locations, "num_regions": batch.num_regions,
                "text_ids": batch.text_ids, "text_lengths": batch.text_lengths,
                "image_keys": batch.image_keys}
