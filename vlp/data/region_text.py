"""Region + text examples and their batches, with every random choice drawn per example.

An example's truncation, objective (seq2seq or bidirectional) and masking draws come from
a generator seeded by (seed, epoch, example index), as VLP drew them in its loader. So a
batch is the same whichever rank or worker builds it, and a run resumed mid-epoch sees
exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp.data.features import box_class_vector, box_sinusoids
from vlp.data.features.boxes import resolve_box_norm
from vlp.data.tokens import TokenizedTexts

BOX_NORMS = ("auto", "image", "lazy")


@dataclass
class TextSettings:
    sep_id: int
    vocab_size: int
    max_len_b: int = 20               # words kept per caption (VLP's --max_len_b)
    always_truncate_tail: bool = False
    max_pred: int = 3                 # masking draws per example
    seed: int = 42


@dataclass
class RegionTextBatch:
    """Padded tensors of a batch. Text is `w1 .. wM [SEP]` then pad; regions are the first
    `num_regions` slots. `s2s_draw`, `mask_*` are the per-example uniform draws that pick
    the objective and the masked tokens; `image_keys` name the images."""

    text_ids: torch.Tensor          # [B, T] long
    text_lengths: torch.Tensor      # [B] long, final [SEP] included
    region_features: torch.Tensor   # [B, R, D] float32
    region_locations: torch.Tensor  # [B, R, C + 6] float32
    num_regions: torch.Tensor       # [B] long
    s2s_draw: torch.Tensor          # [B] float
    mask_order: torch.Tensor        # [B, T] float (padding: 2.0)
    mask_kind: torch.Tensor         # [B, P] float
    mask_coin: torch.Tensor         # [B, P] float
    mask_random_ids: torch.Tensor   # [B, P] long
    index: torch.Tensor             # [B] long, example index in the dataset
    image_keys: list
    targets: torch.Tensor | None = None  # [B, K] soft answer scores (VQA)
    region_masked: torch.Tensor | None = None  # [B, R] bool, regions masked (--vis_mask_prob)
    region_iou: torch.Tensor | None = None  # [B, R] IoU with the referent (grounding)
    region_centres: torch.Tensor | None = None  # [B, R, 2] box centres over the image size
    referent_centre: torch.Tensor | None = None  # [B, 2] the referent's, likewise
    task: str | None = None  # the task of a multi-task run's batch (vlp.train.multitask)

    def _map(self, fn) -> "RegionTextBatch":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RegionTextBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v
                                  for k, v in values.items()})

    def to(self, device, non_blocking: bool = False) -> "RegionTextBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "RegionTextBatch":
        return self._map(lambda t: t.pin_memory())

    def __len__(self) -> int:
        return int(self.text_ids.shape[0])


def truncate(ids: np.ndarray, max_len: int, tail_only: bool, rng: np.random.Generator):
    """At most `max_len` tokens: VLP dropped from the tail, or (without
    --always_truncate_tail) from the head or the tail at random, one token at a time."""
    if len(ids) <= max_len:
        return ids
    if tail_only:
        return ids[:max_len]
    head = int((rng.random(len(ids) - max_len) < 0.5).sum())
    return ids[head:head + max_len]


def region_inputs(record, regions: int, box_norm: str = "auto",
                  box_frequencies: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `regions` regions of a record: features [n, D] and locations, float32:
    the box+class vectors [n, C + 6], followed by the box's centre and size with their
    sine/cosine features at `box_frequencies` octaves unless that is None (the model
    config's region_box_octaves)."""
    n = min(record.num_regions, regions)
    box_norm = resolve_box_norm(record, box_norm)
    locations = box_class_vector(record, box_norm)
    if box_frequencies is not None:
        locations = np.concatenate([locations, box_sinusoids(record, box_frequencies, box_norm)], 1)
    return np.asarray(record.features[:n], dtype=np.float32), locations[:n]


def pad_regions(examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack examples' "features"/"locations" into [B, R, D], [B, R, C+6] and counts [B]."""
    b = len(examples)
    r = max(len(e["features"]) for e in examples)
    d = examples[0]["features"].shape[1]
    c = examples[0]["locations"].shape[1]
    features = np.zeros((b, r, d), dtype=np.float32)
    locations = np.zeros((b, r, c), dtype=np.float32)
    for row, e in enumerate(examples):
        n = len(e["features"])
        features[row, :n] = e["features"]
        locations[row, :n] = e["locations"]
    counts = torch.tensor([len(e["features"]) for e in examples])
    return torch.from_numpy(features), torch.from_numpy(locations), counts


class RegionImages(Dataset):
    """Image i's regions, for decoding: {"key", "index", "features", "locations"}."""

    def __init__(self, image_keys: list[str], store, regions: int, box_norm: str = "auto",
                 box_frequencies: int | None = None):
        self.image_keys, self.store, self.regions, self.box_norm = image_keys, store, regions, box_norm
        self.box_frequencies = box_frequencies

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getitem__(self, i: int) -> dict:
        key = self.image_keys[i]
        features, locations = region_inputs(self.store[key], self.regions, self.box_norm,
                                            self.box_frequencies)
        return {"key": key, "index": i, "features": features, "locations": locations}


class RegionTextDataset(Dataset):
    """Example i: caption i's tokens with the regions of its image. `image_keys` and
    `targets` are sequences: lists, or (in training) vlp.data.mapped's KeyColumn and
    SoftTargets, mapped from the cache like the tokens."""

    def __init__(self, tokens: TokenizedTexts, image_keys: Sequence[str], store, regions: int,
                 text: TextSettings, box_norm: str = "auto",
                 targets: Sequence[dict[int, float]] | None = None, box_frequencies: int | None = None,
                 vis_mask_prob: float = 0.0):
        if len(tokens) != len(image_keys) or (targets is not None and len(targets) != len(tokens)):
            raise ValueError("one image key (and target) per tokenized text")
        if box_norm not in BOX_NORMS:
            raise ValueError(f"box_norm must be one of {BOX_NORMS}, got {box_norm!r}")
        self.tokens, self.image_keys, self.store = tokens, image_keys, store
        self.regions, self.text, self.box_norm = regions, text, box_norm
        self.targets = targets  # VQA: {answer index: soft score} per question
        self.box_frequencies = box_frequencies
        self.vis_mask_prob = vis_mask_prob  # share of an image's regions masked (VLP's flag)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose random draws examples use; call before iterating."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getitem__(self, i: int) -> dict:
        s = self.text
        rng = np.random.default_rng([s.seed, self.epoch, i])
        words = truncate(self.tokens[i], s.max_len_b, s.always_truncate_tail, rng)
        text = np.append(words.astype(np.int64), s.sep_id)
        key = self.image_keys[i]
        record = self.store[key]
        features, locations = region_inputs(record, self.regions, self.box_norm,
                                            self.box_frequencies)
        example = {
            "text": text, "key": key, "index": i, "features": features, "locations": locations,
            "s2s_draw": rng.random(),
            "order": rng.random(len(text)),
            "kind": rng.random(s.max_pred), "coin": rng.random(s.max_pred),
            "random_ids": rng.integers(0, s.vocab_size, s.max_pred),
        }
        if self.vis_mask_prob > 0:
            # Drawn after the text's draws, so those stay what they are without the flag.
            example["masked_regions"] = masked_regions(len(features), self.vis_mask_prob, rng)
        if self.targets is not None:
            example["target"] = self.targets[i]
        return self.complete(example, record)

    def complete(self, example: dict, record) -> dict:
        """What a subclass adds to example i from its image's region record."""
        return example


def masked_regions(regions: int, vis_mask_prob: float, rng: np.random.Generator) -> np.ndarray:
    """VLP's --vis_mask_prob draw: int(regions * vis_mask_prob) distinct region indices
    (VLP counted its fixed len_vis_input regions; here the image's own, the same number
    when the image fills every slot)."""
    return rng.choice(regions, int(regions * vis_mask_prob), replace=False)


def collate(examples: list[dict], pad_id: int = 0, num_answers: int = 0) -> RegionTextBatch:
    """Pad text to the longest caption and regions to the most regions in the batch;
    with `num_answers`, dense [B, K] soft answer targets too."""
    b = len(examples)
    t = max(len(e["text"]) for e in examples)
    text = np.full((b, t), pad_id, dtype=np.int64)
    order = np.full((b, t), 2.0)
    for row, e in enumerate(examples):
        m = len(e["text"])
        text[row, :m] = e["text"]
        order[row, :m] = e["order"]
    features, locations, counts = pad_regions(examples)

    def stack(name, dtype):
        return torch.as_tensor(np.stack([np.asarray(e[name]) for e in examples]), dtype=dtype)

    return RegionTextBatch(
        text_ids=torch.from_numpy(text),
        text_lengths=torch.tensor([len(e["text"]) for e in examples]),
        region_features=features, region_locations=locations, num_regions=counts,
        s2s_draw=stack("s2s_draw", torch.float32),
        mask_order=torch.from_numpy(order).float(),
        mask_kind=stack("kind", torch.float32), mask_coin=stack("coin", torch.float32),
        mask_random_ids=stack("random_ids", torch.long),
        index=torch.tensor([e["index"] for e in examples]),
        image_keys=[e["key"] for e in examples],
        targets=dense_targets([e["target"] for e in examples], num_answers) if num_answers else None,
        region_masked=region_mask(examples, features.shape[1]),
        region_iou=region_iou(examples, features.shape[1]),
        region_centres=region_centres(examples, features.shape[1]),
        referent_centre=stack("centre", torch.float32) if "centre" in examples[0] else None,
    )


def region_mask(examples: list[dict], slots: int) -> torch.Tensor | None:
    """[B, R] bool, True at each example's "masked_regions"; None when not drawn."""
    if "masked_regions" not in examples[0]:
        return None
    mask = torch.zeros(len(examples), slots, dtype=torch.bool)
    for row, e in enumerate(examples):
        mask[row, torch.as_tensor(e["masked_regions"], dtype=torch.long)] = True
    return mask


def region_iou(examples: list[dict], slots: int) -> torch.Tensor | None:
    """[B, R] float, each example's "iou" per region (0 on padding); None without them."""
    if "iou" not in examples[0]:
        return None
    out = torch.zeros(len(examples), slots)
    for row, e in enumerate(examples):
        out[row, :len(e["iou"])] = torch.from_numpy(e["iou"])
    return out


def region_centres(examples: list[dict], slots: int) -> torch.Tensor | None:
    """[B, R, 2] float, each example's "centres" per region (0 on padding); None without."""
    if "centres" not in examples[0]:
        return None
    out = torch.zeros(len(examples), slots, 2)
    for row, e in enumerate(examples):
        out[row, :len(e["centres"])] = torch.from_numpy(e["centres"])
    return out


def dense_targets(targets: list[dict[int, float]], num_answers: int) -> torch.Tensor:
    out = torch.zeros(len(targets), num_answers)
    for row, target in enumerate(targets):
        if target:
            out[row, list(target)] = torch.tensor(list(target.values()), dtype=torch.float32)
    return out
