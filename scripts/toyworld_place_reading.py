"""Does a captioner read where a shape is? Its choice among ToyWorld's nine place phrases.

For every drawn shape of the test scenes, the caption "a SIZE COLOUR SHAPE <place> of
the scene ." is scored with each of the nine places of ToyWorld's captions ("in the
center", "on the left", "in the top left corner", ...), token by token as decoding scores
it (vlp.decode.caption_log_probs), and the best-scoring place is compared with the
shape's cell in the 3x3 grid. It prints the accuracy per cell, the places chosen, and the
same with every region's box replaced by another region's of the image (a model that
reads the box changes its choice; one that does not, does not). A model that ignores the
boxes picks one or two places for every shape: about 1/6 of the shapes lie in the centre.

    python scripts/toyworld_place_reading.py runs/quickstart CHECKPOINT [--images 200]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vlp.data.captions import read_captions
from vlp.data.features import open_store
from vlp.data.region_text import pad_regions, region_inputs
from vlp.data.tokens import load_tokenizer, tokenize
from vlp.decode import caption_log_probs
from vlp.decode.run import load_model
from vlp.eval.caption_truth import cell
from vlp.eval.toyworld_scenes import Scene, read_instances
from vlp.model.decoding import decoding_steps

PLACES = {("middle", "middle"): "in the center", ("middle", "left"): "on the left",
          ("middle", "right"): "on the right", ("top", "middle"): "at the top",
          ("bottom", "middle"): "at the bottom", ("top", "left"): "in the top left corner",
          ("top", "right"): "in the top right corner",
          ("bottom", "left"): "in the bottom left corner",
          ("bottom", "right"): "in the bottom right corner"}


@torch.no_grad()
def chosen_places(model, tokenizer, features, locations, shape_words: str) -> list[tuple]:
    """The place the model scores highest after `shape_words`, for each region input."""
    texts = [f"a {shape_words} {phrase} of the scene ." for phrase in PLACES.values()]
    pieces = [np.append(p, model.config.sep_token_id) for p in tokenize(tokenizer, texts)]
    ids = torch.full((len(pieces), max(map(len, pieces))), model.config.pad_token_id)
    for row, p in enumerate(pieces):
        ids[row, :len(p)] = torch.from_numpy(p.astype(np.int64))
    lengths = torch.tensor([len(p) for p in pieces])
    out = []
    for locs in locations:
        feats, locs, n = pad_regions([{"features": features, "locations": locs}] * len(texts))
        steps = decoding_steps(model, feats, locs, n, ids.shape[1])
        scores = caption_log_probs(steps, ids, lengths).sum(1)
        out.append(list(PLACES)[int(scores.argmax())])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a main-job output directory (toyworld/, regions.lmdb)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--images", type=int, default=200, help="test images to read")
    args = p.parse_args()

    ann = args.run / "toyworld" / "annotations"
    model = load_model(args.checkpoint).eval()
    tokenizer = load_tokenizer(str(args.checkpoint), True)
    store = open_store(str(args.run / "regions.lmdb"))
    objects, sizes = {}, {}
    for path in sorted(ann.glob("instances_*.json")):
        found, found_sizes = read_instances(path)
        objects.update(found)
        sizes.update(found_sizes)
    keys = {c.image_id: c.image_key for c in read_captions([ann / "dataset_toy.json"], ("test",))}
    right, total, chosen = Counter(), Counter(), Counter()
    moved_right, changed = 0, 0
    octaves = model.config.region_box_octaves
    for image_id in sorted(keys)[:args.images]:
        scene = Scene(tuple(objects[image_id]), *sizes[image_id])
        features, locations = region_inputs(store[keys[image_id]], model.config.max_regions,
                                            "auto", octaves)
        shuffled = np.roll(locations, 1, axis=0)  # each region with another region's box
        for o in scene.objects:
            truth = cell(o, scene)
            own, other = chosen_places(model, tokenizer, features, (locations, shuffled),
                                       f"{o.size} {o.color} {o.shape}")
            total[truth] += 1
            right[truth] += own == truth
            chosen[own] += 1
            moved_right += other == truth
            changed += other != own
    n = sum(total.values())
    print(f"{args.checkpoint}: the right place for {sum(right.values())} of {n} shapes "
          f"({100 * sum(right.values()) / n:.1f}%); with the boxes moved to other regions "
          f"{100 * moved_right / n:.1f}%, the choice changed for {100 * changed / n:.1f}%")
    print(json.dumps({PLACES[c]: f"{right[c]}/{total[c]}" for c in PLACES}))
    print("chosen:", json.dumps({PLACES[c]: chosen[c] for c in PLACES if chosen[c]}))


if __name__ == "__main__":
    main()
