"""Self-critical sequence training: sample captions, reward them with CIDEr-D, push up the
ones that beat a baseline (Rennie et al. 2017; VLP's SCST, and the "mean of the other
samples" baseline of later work). Two recipes (--scst_reward):

`vlp`, VLP's: one example per caption. Samples (train mode) and the greedy baseline
(eval mode) are decoded with the example's training attention mask, so text positions
past the caption's [SEP] see only the image and carry segment 0. Each is scored by
CIDEr-D against the example's own caption alone, on word-piece ids as VLP's
`array_to_str` wrote them (through [SEP] and one [PAD]), with document frequencies from
the references of that one scoring call (samples' and greedy captions' both). The loss
counts each sample's tokens through its [SEP] and the token drawn right after it (through
a drawn [PAD], where that came first).

`standard`: one example per image, scored against all of its references on words from
coco-caption's Java-free PTB tokenizer, with document frequencies computed once from
the training references (saved beside the run); the usual decoding layout; the loss
counts each sample's tokens through its [SEP].
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
RECIPES = ("vlp", "standard")
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


def vlp_decoded(tokens: list[int], eos: int, pad: int, max_length: int) -> tuple[list[int], int]:
    """A decoded row as VLP's SCST read it: (the ids its reward scored, the positions its
    loss counted). VLP copied tokens up to the first [SEP] (kept) or [PAD] into a row of
    zeros ([PAD]); `array_to_str` wrote ids through the first zero, so the reward sees
    "... [SEP] [PAD]" unless the [SEP] is the last slot. `RewardCriterion`'s mask is that
    row's nonzero positions shifted right by one: through the [SEP] and one slot more."""
    for k, token in enumerate(tokens):
        if token == eos:
            return tokens[:k + 1] + ([pad] if k + 1 < max_length else []), min(k + 2, max_length)
        if token == pad:
            return tokens[:k + 1], k + 1
    return list(tokens), max_length


def vlp_reference(caption: list[int], pad: int, max_length: int) -> list[int]:
    """The example's caption (its final [SEP] included) as VLP's reward read it from the
    training input: through the first [PAD] after it, if the text slots had room."""
    return list(caption) + ([pad] if len(caption) < max_length else [])


def vlp_cider(candidates: list[list[int]], references: list[list[int]]) -> np.ndarray:
    """VLP's CIDEr-D call: each candidate against its one reference, on ids, with
    document frequencies from this call's references (one document per candidate,
    repeats counted, as coco-caption's df='corpus' did)."""
    from coco_caption.cider import cider_d, document_frequency

    refs = [[" ".join(map(str, r))] for r in references]
    return cider_d([" ".join(map(str, c)) for c in candidates], refs, document_frequency(refs))


def leave_one_out(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Each sample's baseline: the mean reward of its image's other k-1 samples."""
    grouped = rewards.view(-1, k)
    return ((grouped.sum(1, keepdim=True) - grouped) / (k - 1)).reshape(-1)


def _leave_one_out(rewards: np.ndarray, k: int) -> np.ndarray:
    return leave_one_out(torch.from_numpy(np.asarray(rewards, dtype=np.float64)), k).numpy()


def policy_loss(log_probs: torch.Tensor, lengths: torch.Tensor, advantage: torch.Tensor):
    """-sum log p * (r - b) over each sample's first `lengths` tokens, averaged over all
    those tokens of the batch (positions past a sample's own length weigh nothing)."""
    steps = torch.arange(log_probs.shape[1], device=log_probs.device)
    mask = (steps[None, :] < lengths[:, None]).to(log_probs.dtype)
    return -(log_probs * mask * advantage[:, None].to(log_probs.dtype)).sum() / mask.sum().clamp(min=1)


class ScstTask(nn.Module):
    """Samples `samples` captions per example in train mode (K/V cache, graph kept),
    rewards them by `recipe` (see the module), and returns the policy-gradient loss with
    the reward figures."""

    heads = ("mlm_head",)

    def __init__(self, model, tokenizer, reward: CiderReward | None, settings: SearchSettings,
                 baseline: str = "greedy", samples: int = 1, recipe: str = "vlp"):
        super().__init__()
        if baseline not in BASELINES:
            raise VLPError(f"--scst_baseline must be one of {BASELINES}, got {baseline!r}")
        if baseline == "mean" and samples < 2:
            raise VLPError("--scst_baseline mean needs --scst_samples of at least 2")
        if recipe not in RECIPES:
            raise VLPError(f"--scst_reward must be one of {RECIPES}, got {recipe!r}")
        if recipe == "standard" and reward is None:
            raise VLPError("--scst_reward standard needs the training references' CIDEr-D")
        self.model, self.tokenizer, self.reward = model, tokenizer, reward
        self.settings, self.baseline, self.samples = settings, baseline, samples
        self.recipe = recipe

    def forward(self, region_features, region_locations, num_regions, text_ids, text_lengths,
                image_keys) -> dict:
        gen = CaptionGenerator(self.model, self.settings)
        rows = torch.arange(region_features.shape[0], device=region_features.device)
        expand = rows.repeat_interleave(self.samples)
        regions = (region_features, region_locations, num_regions)
        if self.recipe == "vlp":
            drawn, rewards, base, loss_lengths = self._vlp(gen, regions, expand, text_ids,
                                                           text_lengths)
        else:
            drawn, rewards, base = self._standard(gen, regions, expand, image_keys)
            loss_lengths = drawn.lengths
        # r - b in float64 first, then float32, as VLP's reward was.
        device = region_features.device
        advantage = torch.as_tensor(rewards - base, dtype=torch.float32, device=device)
        loss = policy_loss(drawn.log_probs, loss_lengths, advantage)
        return {"loss": loss, "reward": float(rewards.mean()), "baseline": float(base.mean()),
                "sample_len": drawn.lengths.float().mean().detach()}

    def _vlp(self, gen, regions, expand, text_ids, text_lengths):
        eos, length = self.settings.eos_id, self.settings.max_length
        pad = self.model.config.pad_token_id
        refs = [vlp_reference(row[:n], pad, length)
                for row, n in zip(text_ids.tolist(), text_lengths.tolist())]
        # VLP decoded with the training example's mask and segment ids (mask_lengths) and
        # drew one token past the [SEP], which its loss counts.
        drawn = gen.sample(*(x[expand] for x in regions), mask_lengths=text_lengths[expand],
                           after_end=1)
        decoded = [vlp_decoded(row, eos, pad, length) for row in drawn.tokens.tolist()]
        candidates = [ids for ids, _ in decoded]
        loss_lengths = torch.tensor([n for _, n in decoded], device=expand.device)
        index = expand.tolist()
        references = [refs[i] for i in index]
        if self.baseline == "mean":
            rewards = vlp_cider(candidates, references)
            return drawn, rewards, _leave_one_out(rewards, self.samples), loss_lengths
        greedy = gen.generate(*regions, mask_lengths=text_lengths)
        greedy_ids = [vlp_decoded(h.tokens + [eos] if h.finished else h.tokens, eos, pad,
                                  length)[0] for h in greedy]
        # One scoring call for samples and greedy captions, as VLP's: it sets the
        # document frequencies.
        scores = vlp_cider(candidates + greedy_ids, references + refs)
        return drawn, scores[:len(candidates)], scores[len(candidates):][index], loss_lengths

    def _standard(self, gen, regions, expand, image_keys):
        drawn = gen.sample(*(x[expand] for x in regions))
        sample_ids = [row[:n - 1] if row[n - 1] == self.settings.eos_id else row[:n]
                      for row, n in zip(drawn.tokens.tolist(), drawn.lengths.tolist())]
        index = expand.tolist()
        rewards = self._score([image_keys[i] for i in index], sample_ids)
        if self.baseline == "mean":
            return drawn, rewards, _leave_one_out(rewards, self.samples)
        greedy = gen.generate(*regions)
        return drawn, rewards, self._score(list(image_keys), [h.tokens for h in greedy])[index]

    def _score(self, keys, sample_ids) -> np.ndarray:
        return np.asarray(self.reward(keys, [self._words(ids) for ids in sample_ids]))

    def _words(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    @staticmethod
    def inputs(batch) -> dict:
        return {"region_features": batch.region_features,
                "region_locations": batch.region_locations, "num_regions": batch.num_regions,
                "text_ids": batch.text_ids, "text_lengths": batch.text_lengths,
                "image_keys": batch.image_keys}
