"""The main job's report: one self-contained HTML page with its pictures beside it.

`write_report(out, results, rows)` reads what the stages left under `out` and writes
`out/report/index.html` plus PNGs in `out/report/img/`: test images with their detected
boxes and labels, generated vs reference captions, questions with predicted and human
answers, metric tables and training curves.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHOWN_IMAGES = 8
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0)]


def _esc(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def draw_regions(image_path: Path, record, class_names: list[str], out_path: Path,
                 scale: int = 2) -> None:
    """The image enlarged `scale` times with each region's box and best class."""
    image = Image.open(image_path).convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    labels = np.asarray(record.cls_probs, dtype=np.float32)
    for i, box in enumerate(np.asarray(record.boxes, dtype=np.float32)):
        color = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        if labels.shape[1]:
            best = int(labels[i, 1:].argmax()) + 1 if labels.shape[1] > 1 else 0
            name = class_names[best] if best < len(class_names) else str(best)
            draw.text((x1 + 2, y1 + 1), f"{name} {float(record.scores[i]):.2f}", fill=color)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)


def draw_located(image, box, label: str, out_path: Path, truth=None, scale: int = 2) -> None:
    """The image (a path or uint8 [H, W, 3] pixels) enlarged `scale` times with the box
    found (x1, y1, x2, y2 pixels) in green under `label`, and the true box, if given, in
    thin magenta."""
    image = (Image.open(image) if isinstance(image, (str, Path)) else Image.fromarray(image))
    image = image.convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    if truth is not None:
        draw.rectangle([float(v) * scale for v in truth], outline="#f032e6", width=1)
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    draw.rectangle([x1, y1, x2, y2], outline="#3cb44b", width=3)
    # Above the box, moved left where it would run off the picture.
    left = max(min(x1 + 2, image.width - draw.textlength(label) - 2), 0)
    draw.text((left, max(y1 - 12, 0)), label, fill="#3cb44b")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)


def plot_curves(logs: dict[str, Path], out_path: Path) -> bool:
    """Loss (and SCST reward) per step of each training run, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlp.train.log import read_metrics

    runs = {name: read_metrics(path) for name, path in logs.items()}
    runs = {name: rows for name, rows in runs.items() if rows}
    if not runs:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], runs.items()):
        key = "reward" if "reward" in rows[0] else "loss"
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], color="#0082c8")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return True


def _test_images(out: Path) -> list[dict]:
    data = json.loads((out / "toyworld" / "annotations" / "dataset_toy.json").read_text())
    return [img for img in data["images"] if img["split"] == "test"][:SHOWN_IMAGES]


def _captions(path: str | None) -> dict:
    if not path or not Path(path).is_file():
        return {}
    return {r["image_id"]: r["caption"] for r in json.loads(Path(path).read_text())}


def _results_file(checkpoint: str | None) -> str | None:
    if not checkpoint:
        return None
    ckpt = Path(checkpoint)
    return str(ckpt.parent / f"{ckpt.name}.test.beam3.results.json")


def _truth_section(results: dict) -> str:
    """How true the captions are of the scenes drawn (vlp.eval.caption_truth)."""
    kinds = ("colour", "shape", "size", "count", "relation", "place")
    rows = []
    for stage in ("caption", "scst"):
        truth = (results.get(stage, {}).get("metrics") or {}).get("truth")
        if truth:
            by_kind = truth["by_kind"]
            rows.append([stage, f"{100 * truth['fully_true']:.1f}%"]
                        + [_share(by_kind.get(k, {})) for k in kinds]
                        + [by_kind.get("incomplete", {}).get("claims", 0),
                           f"{truth['mentioned']:.2f} / {truth['drawn']:.2f}"])
    if not rows:
        return ""
    return ("<h2>Are the captions true? (test split, beam 3; claims checked against the "
            "shapes drawn)</h2>" + _table(["model", "fully true"] + [f"{k} true" for k in kinds]
                                          + ["cut off", "objects named / drawn"], rows))


def ablation_rows(results: dict) -> list[tuple[str, float, float]]:
    """(measure, pretrained, from BERT) for the test figures both finetunings have."""
    from vlp.data.toyworld.vqa import accuracy_by_kind

    both = [(results[stage]["metrics"], results["ablation"][stage]["metrics"])
            for stage in ("caption", "vqa")]
    (cap, cap_bert), (vqa, vqa_bert) = both
    rows = [("caption CIDEr", cap["CIDEr"], cap_bert["CIDEr"]),
            ("captions fully true %", 100 * cap["truth"]["fully_true"],
             100 * cap_bert["truth"]["fully_true"]),
            ("VQA accuracy %", vqa["overall"], vqa_bert["overall"])]
    kinds, kinds_bert = accuracy_by_kind(vqa), accuracy_by_kind(vqa_bert)
    return rows + [(f"  {k} %", a, kinds_bert.get(k, float("nan"))) for k, a in kinds.items()]


def _ablation_section(results: dict) -> str:
    if "ablation" not in results:
        return ""
    rows = [[name.strip(), _fmt(a), _fmt(b)] for name, a, b in ablation_rows(results)]
    return ("<h2>Pretrained or not (the paper's \"w/o pre-training\" row: the same "
            "finetuning from BERT alone; test split)</h2>"
            + _table(["", "pretrained", "from BERT"], rows))


def _share(kind: dict) -> str:
    return "-" if kind.get("share") is None else f"{100 * kind['share']:.0f}% of {kind['claims']}"


def _vqa_section(results: dict) -> str:
    vqa = results.get("vqa")
    if not vqa or not vqa.get("examples"):
        return ""
    rows = [[e["image"], e["question"], e["predicted"], ", ".join(e["human"]),
             "right" if e["correct"] else "wrong"] for e in vqa["examples"]]
    return ("<h2>Questions</h2>" + _table(["image", "question", "predicted", "human answers",
                                            ""], rows))


def _grounding_section(out: Path, results: dict, img_dir: Path) -> str:
    """Acc@0.5 by split and expression kind, and test expressions with the box found
    (green) and the true box (magenta)."""
    grounding = results.get("grounding")
    if not grounding:
        return ""
    metrics = grounding["metrics"]
    kinds = sorted({k for m in metrics.values() for k in m["by_kind"]})
    table = _table(["split", "Acc@0.5", *kinds],
                   [[split, _fmt(m["accuracy"]), *(_fmt(m["by_kind"].get(k, "")) for k in kinds)]
                    for split, m in metrics.items()])
    cards = []
    for n, row in enumerate(grounding.get("examples", [])):
        image = out / "toyworld" / "images" / f"{row['image']}.jpg"
        if not image.is_file():
            continue
        x, y, w, h = row["box"]
        tx, ty, tw, th = row["truth"]
        picture = img_dir / f"located_{n}.png"
        draw_located(image, (x, y, x + w, y + h), f"{row['score']:.2f}", picture,
                     truth=(tx, ty, tx + tw, ty + th), scale=3)
        verdict = "right" if row["iou"] >= 0.5 else "wrong"
        cards.append(f"<div class='card'><img src='img/{picture.name}' alt='{_esc(row['sent'])}'>"
                     f"<p><b>{_esc(row['sent'])}</b></p><p>{_esc(row['kind'])}: IoU "
                     f"{row['iou']:.2f}, {verdict}</p></div>")
    return ("<h2>Localization from text (Acc@0.5)</h2>" + table
            + "<p>Green: the box found; magenta: the referent's.</p>"
            + "<div class='cards'>" + "".join(cards) + "</div>")


def write_report(out: str | Path, results: dict, rows: list[tuple[str, float, str]]) -> Path:
    out = Path(out)
    report = out / "report"
    img_dir = report / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    parts = ["<h1>vlp main job on ToyWorld</h1>",
             "<h2>Stages</h2>" + _table(["stage", "time (s)", "key metric"],
                                        [[n, f"{s:.1f}", m] for n, s, m in rows])]
    metric_rows = []
    for stage in ("caption", "scst"):
        metrics = results.get(stage, {}).get("metrics") or {}
        if metrics:
            gain = (metrics.get("grounding") or {}).get("gain", "")
            metric_rows.append([stage] + [_fmt(metrics.get(k, "")) for k in
                                          ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")]
                               + [_fmt(gain)])
    if metric_rows:
        parts.append("<h2>Caption metrics (test split, beam 3)</h2>" + _table(
            ["model", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE",
             "image worth (nats/token)"], metric_rows))
    parts.append(_truth_section(results))
    parts.append(_ablation_section(results))
    vqa = results.get("vqa", {}).get("metrics")
    if vqa:
        from vlp.data.toyworld.vqa import accuracy_by_kind

        kinds = accuracy_by_kind(vqa)
        parts.append("<h2>VQA accuracy (test split, official metric)</h2>" + _table(
            ["overall", *kinds], [[vqa["overall"], *kinds.values()]]))
    if "detector" in results:
        d = results["detector"]
        parts.append("<h2>Detector (val split)</h2>" + _table(
            ["mAP@0.5", "recall@0.5", "training s"],
            [[_fmt(d.get("map50")), _fmt(d.get("recall50")), _fmt(d.get("seconds"))]]))
    logs = {name: out / name for name in ("pretrain", "localize", "caption", "scst", "vqa", "grounding")
            if (out / name).is_dir()}
    if plot_curves(logs, img_dir / "curves.png"):
        parts.append('<h2>Training curves</h2><img src="img/curves.png" alt="training curves">')
    parts.append(_examples(out, results, img_dir))
    parts.append(_vqa_section(results))
    parts.append(_grounding_section(out, results, img_dir))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlp report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(p for p in parts if p)
            + "</body></html>\n")
    path = report / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _examples(out: Path, results: dict, img_dir: Path) -> str:
    if "features" not in results or not (out / "toyworld").is_dir():
        return ""
    from vlp.data.features import open_store

    store = open_store(results["features"]["store"])
    names = []
    det = results.get("detector", {}).get("checkpoint")
    if det and (Path(det) / "detector.json").is_file():
        names = json.loads((Path(det) / "detector.json").read_text()).get("class_names", [])
    ce = _captions(_results_file(results.get("caption", {}).get("checkpoint")))
    rl = _captions(_results_file(results.get("scst", {}).get("checkpoint")))
    cards = []
    for img in _test_images(out):
        key = Path(img["filename"]).stem
        if key not in store:
            continue
        picture = img_dir / f"{key}.png"
        draw_regions(out / "toyworld" / img["filepath"] / img["filename"], store[key], names, picture)
        image_id = img.get("cocoid", img.get("imgid"))
        lines = []
        if image_id in ce:
            lines.append(f"<p><b>cross-entropy:</b> {_esc(ce[image_id])}</p>")
        if image_id in rl:
            lines.append(f"<p><b>SCST:</b> {_esc(rl[image_id])}</p>")
        refs = "".join(f"<li>{_esc(s['raw'])}</li>" for s in img["sentences"][:3])
        cards.append(f"<div class='card'><img src='img/{picture.name}' alt='{_esc(key)}'>"
                     f"{''.join(lines)}<p><b>references:</b></p><ul>{refs}</ul></div>")
    store.close()
    return "<h2>Test images: regions and captions</h2><div class='cards'>" + "".join(cards) + "</div>"


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f0f0f0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { width: 270px; border: 1px solid #ddd; padding: 8px; }
.card img { width: 256px; }
"""
