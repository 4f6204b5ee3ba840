"""`vlp eval-grounding`: the region a localization checkpoint picks for each referring
expression of RefCOCO-style splits, its box, and Acc@0.5 (the share of expressions whose
predicted box overlaps the referent at IoU >= 0.5) per split, overall and per expression
kind. Predictions go to CHECKPOINT.SPLIT.grounding_results.json (COCO [x, y, w, h] pixel
boxes), the figures to CHECKPOINT.SPLIT.grounding_metrics.json."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vlp.data.refer import accuracy_at_iou, box_iou
from vlp.errors import VLPError
from vlp.model.load import checkpoint_name


def evaluate(args) -> list[dict]:
    from vlp.data.grounding import expressions_of, refer_location
    from vlp.data.refer import read_refer
    from vlp.data.sources import keep_present, open_features
    from vlp.model.load import expand

    found = expand(args.model_recover_path)
    refer = read_refer(*refer_location(args.src_file))
    store = open_features(args)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    by_split = {}
    for split in args.split:
        expressions = expressions_of(refer, [split])
        if not expressions:
            raise VLPError(f"{args.src_file}: split {split} holds no expression")
        present = keep_present((e.image_key for e in expressions), store,
                               args.skip_missing_features, lambda m: print(m, file=sys.stderr))
        by_split[split] = [e for e in expressions if e.image_key in present]
    return [evaluate_checkpoint(path, args, by_split, store, device) for path in found]


def evaluate_checkpoint(path: Path, args, by_split: dict, store, device) -> dict:
    from vlp.data.tokens import load_tokenizer
    from vlp.model.load import load

    from vlp.model.grounding import choose_objective

    model = load(path, args.bert_model).to(device).eval()
    if not (model.config.grounding or model.config.grounding_centre):
        raise VLPError(f"{path} has no localization head: train one with --tasks refcoco")
    try:
        objective = choose_objective(model, args.grounding_objective)
    except VLPError as err:
        raise VLPError(f"{path}: {err}") from None
    if not args.bert_model and not (path / "vocab.txt").is_file():
        raise VLPError(f"{path} has no vocab.txt: pass --bert_model with its vocabulary")
    tokenizer = load_tokenizer(Path(args.bert_model) if args.bert_model else path,
                               args.do_lower_case)
    out_dir = Path(args.output_dir) if args.output_dir else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"checkpoint": str(path), "splits": {}}
    for split, expressions in by_split.items():
        rows = locate(model, objective, tokenizer, expressions, store, args, device)
        metrics = grounding_metrics(rows)
        name = f"{checkpoint_name(path)}.{split}"
        (out_dir / f"{name}.grounding_results.json").write_text(json.dumps(rows) + "\n")
        (out_dir / f"{name}.grounding_metrics.json").write_text(
            json.dumps(metrics, indent=2) + "\n")
        print(f"{path} {split}: {metrics_line(metrics)} -> {out_dir / name}.grounding_*.json")
        summary["splits"][split] = metrics
    return summary


@torch.no_grad()
def locate(model, objective: str, tokenizer, expressions, store, args, device) -> list[dict]:
    """One row per expression: ref and sentence ids, split, kind, the sentence, its image's
    store key, the region `objective`'s head chose: its box ([x, y, w, h] pixels), its
    score (softmax over the image's regions) and IoU with the referent, and the best IoU any
    region of the image reaches; with the centre head, the predicted and true centres (x, y
    over the image's size) too."""
    from vlp.model.grounding import region_scores

    from vlp.data.grounding import GroundingDataset, boxes_of
    from vlp.data.region_text import TextSettings, collate
    from vlp.data.tokens import cached_tokenize

    tokens = cached_tokenize(tokenizer, [e.text for e in expressions], None)
    text = TextSettings(sep_id=model.config.sep_token_id, vocab_size=model.config.vocab_size,
                        max_len_b=args.max_len_b, always_truncate_tail=True, max_pred=1)
    boxes = boxes_of(expressions)
    dataset = GroundingDataset(tokens, [e.image_key for e in expressions], store,
                               args.len_vis_input, text, args.box_norm,
                               box_frequencies=model.config.region_box_octaves, boxes=boxes)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=collate)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc="locate", unit="expr", dynamic_ncols=True)
    rows = []
    for batch in loader:
        batch = batch.to(device)
        scores, predicted = region_scores(model, objective, batch.text_ids, batch.text_lengths,
                                          batch.region_features, batch.region_locations,
                                          batch.num_regions, batch.region_centres)
        scores = scores.softmax(-1)
        best = scores.argmax(-1)
        for row, i in enumerate(batch.index.tolist()):
            e, j = expressions[i], int(best[row])
            x1, y1, x2, y2 = (float(v) for v in store[e.image_key].boxes[j])
            found = {"ref_id": e.ref_id, "sent_id": e.sent_id, "split": e.split,
                     "kind": e.kind, "sent": e.text, "image": e.image_key,
                     "box": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(scores[row, j]),
                     "iou": float(box_iou((x1, y1, x2, y2), e.box)),
                     "best_iou": float(batch.region_iou[row].max()),
                     "truth": [e.box[0], e.box[1], e.box[2] - e.box[0], e.box[3] - e.box[1]]}
            if "centre" in predicted:
                found["centre"] = [float(v) for v in predicted["centre"][row]]
                found["true_centre"] = [float(v) for v in batch.referent_centre[row]]
            rows.append(found)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return rows


def _xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def grounding_metrics(rows: list[dict]) -> dict:
    """Acc@0.5 of the rows overall and per kind, from their predicted and true boxes;
    "upper_bound": the share whose image has any region at IoU >= 0.5."""
    def accuracy(subset):
        return 100 * accuracy_at_iou(_xyxy([r["box"] for r in subset]),
                                     _xyxy([r["truth"] for r in subset]))

    kinds = defaultdict(list)
    for r in rows:
        kinds[r["kind"] or "all"].append(r)
    metrics = {"expressions": len(rows), "accuracy": accuracy(rows),
               "by_kind": {k: accuracy(v) for k, v in sorted(kinds.items())},
               "upper_bound": 100 * float(np.mean([r["best_iou"] >= 0.5 for r in rows])) if rows else 0.0}
    if rows and "centre" in rows[0]:
        # The centre head's own error: |dx| + |dy| over the image's size.
        metrics["centre_error"] = float(np.mean(
            [abs(r["centre"][0] - r["true_centre"][0]) + abs(r["centre"][1] - r["true_centre"][1])
             for r in rows]))
    return metrics


def metrics_line(metrics: dict) -> str:
    kinds = ", ".join(f"{k} {a:.1f}" for k, a in metrics["by_kind"].items())
    centre = (f"; centre error {metrics['centre_error']:.3f}" if "centre_error" in metrics
              else "")
    return (f"Acc@0.5 {metrics['accuracy']:.2f}% of {metrics['expressions']} expressions "
            f"({kinds}); regions reach {metrics['upper_bound']:.1f}%{centre}")
