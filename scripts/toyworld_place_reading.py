"""Does a captioner read where a shape is? Its choice among ToyWorld's nine place phrases.

For every drawn shape of the test scenes, the caption "a SIZE COLOUR SHAPE <place> of
the scene ." is scored with each of the nine places of ToyWorld's captions ("in the
center", "on the left", "in the top left corner", ...), token by token as decoding scores
it (vlp.decode.caption_log_probs), and the best-scoring place is compared with the
shape's cell in the 3x3 grid. It prints the accuracy per cell, the places chosen, and the
same with every region's box replaced by another region's of the image (a model that
reads the box changes its choice; one that does not, does not). A model that ignores the
boxes picks one or two places for every shape: about 1/6 of the shapes lie in the centre.

With --layers it also says where the place is lost, layer by layer: a linear probe
(multinomial logistic regression, fitted on the training scenes, scored on the test
scenes) reads the 3x3 cell from (a) each region slot's hidden state, the cell of the
region's box, and (b) the hidden state at the [MASK] that follows "a SIZE COLOUR SHAPE"
in seq2seq mode, where decoding writes the place, the cell of the shape named. A model
whose slots know their cell while (b) stays at the prior does not carry the named shape's
place to the words.

    python scripts/toyworld_place_reading.py runs/quickstart CHECKPOINT [--images 200] [--layers]
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
    p.add_argument("--layers", action="store_true",
                   help="also probe each layer's hidden states for the cell (see above)")
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
    if args.layers:
        split_keys = {split: {c.image_id: c.image_key
                              for c in read_captions([ann / "dataset_toy.json"], (split,))}
                      for split in ("train", "test")}
        states = {split: layer_states(model, tokenizer, store, objects, sizes,
                                      sorted(found.items())[:args.images])
                  for split, found in split_keys.items()}
        for what, label in (("region", "region slots, their box's cell"),
                            ("text", "the [MASK] after the shape's words, the shape's cell")):
            (x_train, y_train), (x_test, y_test) = states["train"][what], states["test"][what]
            prior = 100 * np.bincount(y_test).max() / len(y_test)
            accuracy = [probe_accuracy(x_train[:, layer], y_train, x_test[:, layer], y_test)
                        for layer in range(x_train.shape[1])]
            print(f"probe, {label}: {len(y_train)} train / {len(y_test)} test, prior "
                  f"{prior:.1f}%, by layer " + " ".join(f"{a:.1f}" for a in accuracy))


CELLS = list(PLACES)


def box_cell(box, width: float, height: float) -> tuple[str, str]:
    """(row, column) of a box's centre in the 3x3 grid, as vlp.eval.caption_truth.cell."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return (("top", "middle", "bottom")[min(2, int(3 * cy / height))],
            ("left", "middle", "right")[min(2, int(3 * cx / width))])


@torch.no_grad()
def layer_states(model, tokenizer, store, objects, sizes, images) -> dict:
    """{"region": (states [N, layers, H], cells [N]), "text": (...)} over `images`
    ((image_id, store key) pairs), one image and shape at a time (no padding)."""
    captured: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out.float()))
             for layer in model.encoder.layer]
    rows = {"region": ([], []), "text": ([], [])}
    mask = tokenizer.convert_tokens_to_ids("[MASK]")
    try:
        for image_id, key in images:
            scene = Scene(tuple(objects[image_id]), *sizes[image_id])
            record = store[key]
            features, locations = region_inputs(record, model.config.max_regions, "auto",
                                                model.config.region_box_octaves)
            r = len(features)
            inputs = (torch.from_numpy(features)[None], torch.from_numpy(locations)[None],
                      torch.tensor([r]))
            for k, o in enumerate(scene.objects):
                ids = [*tokenize(tokenizer, [f"a {o.size} {o.color} {o.shape}"])[0], mask]
                captured.clear()
                model.encode(torch.tensor([ids]), torch.tensor([len(ids)]), *inputs,
                             torch.tensor([True]))
                # Layout: [CLS], the regions, [SEP], the text (vlp.model.masks).
                rows["text"][0].append(torch.stack([h[0, r + 1 + len(ids)] for h in captured]))
                rows["text"][1].append(CELLS.index(cell(o, scene)))
                if k == 0:
                    for slot in range(r):
                        rows["region"][0].append(torch.stack([h[0, 1 + slot] for h in captured]))
                        rows["region"][1].append(CELLS.index(
                            box_cell(record.boxes[slot], scene.width, scene.height)))
    finally:
        for hook in hooks:
            hook.remove()
    return {what: (torch.stack(x).numpy(), np.array(y)) for what, (x, y) in rows.items()}


def probe_accuracy(x_train, y_train, x_test, y_test, l2: float = 1e-3, classes: int = 9) -> float:
    """Test accuracy (%) of a multinomial logistic regression on standardised features,
    fitted by L-BFGS with an L2 penalty."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xs = torch.from_numpy((x_train - mean) / std).float()
    ys = torch.from_numpy(y_train).long()
    linear = torch.nn.Linear(xs.shape[1], classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = (torch.nn.functional.cross_entropy(linear(xs), ys)
                 + l2 * linear.weight.pow(2).sum())
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    with torch.no_grad():
        guess = linear(torch.from_numpy((x_test - mean) / std).float()).argmax(1).numpy()
    return float(100 * (guess == y_test).mean())


if __name__ == "__main__":
    main()
