"""Where a checkpoint keeps (or does not keep) where ToyWorld's shapes lie: linear probes.

ToyWorld's position questions ("Is the red circle to the left or to the right of the
blue square?") need the words that name a shape to reach that shape's box. This prints,
for one checkpoint and a main-job output directory:

  1. each region's x-centre read linearly from its slot, at the embedding and at the
     last layer (R^2 on held-out regions);
  2. the answer of the left/right training questions read linearly from [CLS], the
     first [SEP], their product (the VQA head's input) and the states of the two naming
     words (accuracy on held-out questions; 0.5 is chance);
  3. with a masked-LM head: the spatial word of the relating alt-text (`a tiny green
     circle under a red disk`) masked and filled, left against right or above against
     below (accuracy on the pretraining alt-text itself; 0.5 is chance).

    python scripts/toyworld_position_probes.py runs/quickstart [--checkpoint DIR]

The default checkpoint is the main job's pretrained model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from transformers import BertTokenizerFast

from vlp.data.captions import image_key_map
from vlp.data.features import open_store
from vlp.data.region_text import region_inputs
from vlp.model import UnifiedVLP

SPATIAL = {"left": "left", "right": "right", "above": "above", "over": "above",
           "below": "below", "under": "below"}
LEFT_RIGHT = " to the left or to the right of "


class Probe:
    """One checkpoint over one main-job directory's ToyWorld store."""

    def __init__(self, run: Path, checkpoint: Path, regions: int):
        self.ann = run / "toyworld" / "annotations"
        self.store = open_store(run / "regions.lmdb")
        self.model = UnifiedVLP.from_pretrained(checkpoint).eval()
        self.tokenizer = BertTokenizerFast.from_pretrained(checkpoint)
        self.regions = regions

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def states(self, key: str, text: str):
        """(embedded sequence, last hidden states, region count, the record) for one image
        and one text; the layout is [CLS] regions [SEP] text [SEP]."""
        record = self.store[key]
        features, locations = (torch.from_numpy(a)[None] for a in region_inputs(
            record, self.regions, box_frequencies=self.model.config.region_box_octaves))
        r = features.shape[1]
        ids = self.ids(text) + [self.tokenizer.sep_token_id]
        args = (torch.tensor([ids]), torch.tensor([len(ids)]), features, locations,
                torch.tensor([r]), torch.zeros(1, dtype=torch.bool))
        embedded, layout = self.model.embed(*args)
        return embedded[0], self.model.encoder(embedded, layout.mask)[0], r, record


def ridge(x_train, y_train, x_test, alpha: float = 1.0):
    """Least squares with an L2 penalty on standardised inputs: predictions for x_test."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    b = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ y_train)
    return b @ w


def held_out(x: np.ndarray, y: np.ndarray, share: float = 0.75):
    cut = int(share * len(y))
    return ridge(x[:cut], y[:cut], x[cut:]), y[cut:]


def x_centres(probe: Probe, keys: list[str]) -> dict[str, float]:
    at_embedding, at_last, centre = [], [], []
    for key in keys:
        embedded, hidden, r, record = probe.states(key, "what is in the picture ?")
        boxes = np.asarray(record.boxes, dtype=np.float32)[:r]
        centre.append((boxes[:, 0] + boxes[:, 2]) / 2 / record.image_w)
        at_embedding.append(embedded[1:1 + r].numpy())
        at_last.append(hidden[1:1 + r].numpy())
    y = np.concatenate(centre)
    out = {}
    for name, x in (("embedding", at_embedding), ("last layer", at_last)):
        pred, truth = held_out(np.concatenate(x), y)
        out[name] = 1 - float(np.mean((pred - truth) ** 2) / np.var(truth))
    return out


def left_right(probe: Probe, keys: dict[str, str]) -> tuple[int, dict[str, float]]:
    vqa = probe.ann / "vqa"
    questions = json.loads((vqa / "v2_OpenEnded_toy_train_questions.json").read_text())["questions"]
    answers = {a["question_id"]: a["multiple_choice_answer"] for a in
               json.loads((vqa / "v2_toy_train_annotations.json").read_text())["annotations"]}
    reads: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("[CLS]", "first [SEP]", "[CLS] * [SEP]", "naming words")}
    labels = []
    for q in questions:
        text = q["question"].lower()
        if LEFT_RIGHT not in text or answers[q["question_id"]] not in ("left", "right"):
            continue
        _, hidden, r, _ = probe.states(keys[str(q["image_id"])], text)
        first = len(probe.ids(text.split(LEFT_RIGHT)[0])) - 1   # last word naming the first shape
        second = len(probe.ids(text)) - 2                       # the word before "?"
        cls, sep = hidden[0], hidden[r + 1]
        reads["[CLS]"].append(cls.numpy())
        reads["first [SEP]"].append(sep.numpy())
        reads["[CLS] * [SEP]"].append((cls * sep).numpy())
        reads["naming words"].append(torch.cat([hidden[r + 2 + first], hidden[r + 2 + second]]).numpy())
        labels.append(1.0 if answers[q["question_id"]] == "left" else -1.0)
    y = np.array(labels)
    out = {}
    if len(y) < 8:  # too few to hold any out
        return len(y), out
    for name, x in reads.items():
        pred, truth = held_out(np.stack(x), y)
        out[name] = float(np.mean(np.sign(pred) == truth))
    return len(y), out


@torch.no_grad()
def fill_spatial_words(probe: Probe) -> tuple[int, float]:
    data = json.loads((probe.ann / "dataset_cc_toy.json").read_text())
    keys = image_key_map([probe.ann / "dataset_cc_toy.json"])
    vocab = {w: probe.tokenizer.convert_tokens_to_ids(w) for w in SPATIAL}
    right = total = 0
    for image in data["images"]:
        if image["split"] != "train":
            continue
        words = image["sentences"][0]["raw"].lower().replace(",", " ,").replace(":", " :").split()
        at = next((i for i, w in enumerate(words) if w in SPATIAL), None)
        if at is None:
            continue
        truth = SPATIAL[words[at]]
        text = " ".join(words[:at] + [probe.tokenizer.mask_token] + words[at + 1:])
        _, hidden, r, _ = probe.states(keys[str(image["cocoid"])], text)
        slot = probe.ids(text).index(probe.tokenizer.mask_token_id)
        p = probe.model.mlm_logits(hidden[r + 2 + slot]).softmax(-1)
        score = {g: float(sum(p[vocab[w]] for w, h in SPATIAL.items() if h == g))
                 for g in set(SPATIAL.values())}
        pair = ("left", "right") if truth in ("left", "right") else ("above", "below")
        right += max(pair, key=score.get) == truth
        total += 1
    return total, right / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a main-job output directory (vlp quickstart --out)")
    ap.add_argument("--checkpoint", type=Path, help="default: RUN/pretrain/model.<last epoch>")
    ap.add_argument("--regions", type=int, default=12, help="regions per image (the main job's)")
    ap.add_argument("--images", type=int, default=600, help="images for the x-centre probe")
    args = ap.parse_args()
    checkpoint = args.checkpoint or max((args.run / "pretrain").glob("model.*"),
                                        key=lambda p: int(p.name.split(".")[1]))
    probe = Probe(args.run, checkpoint, args.regions)
    keys = image_key_map([probe.ann / "dataset_toy.json"])
    print(f"checkpoint {checkpoint}")
    for layer, r2 in x_centres(probe, list(keys.values())[: args.images]).items():
        print(f"  region x-centre from its slot at the {layer}: R^2 {r2:.3f}")
    n, accuracy = left_right(probe, keys)
    for name, value in accuracy.items():
        print(f"  left/right answer of {n} questions from {name}: {value:.3f} held out")
    n, value = fill_spatial_words(probe)
    print(f"  masked spatial word of {n} relating alt-texts filled right: {value:.3f}")


if __name__ == "__main__":
    main()
