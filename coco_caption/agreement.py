"""Check that the Java-free backend gives the Java backend's scores, on your data or on
synthetic captions full of punctuation, contractions, numbers and non-ASCII words.

    python -m coco_caption.agreement RESULTS REFERENCES [--split test]
    python -m coco_caption.agreement --synthetic 5000

Prints, per metric, both corpus scores and the largest per-image difference; exits 1 when
a per-image difference exceeds --tolerance (1e-6).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from coco_caption.evaluation import evaluate
from vlp.errors import VLPError

_WORDS = ("a an the man woman dog cat people group of sitting on top bench table plate pizza "
          "riding wave surfboard street sign red two young boy girl holding umbrella near "
          "building train kitchen giraffe zebra playing tennis").split()
_EXTRAS = ["man's", "dogs'", "it's", "don't", "can't", "isn't", "they're", "I'm", "3-year-old",
           "t-shirt", "1,000", "3.5", "10:30", "2nd", "'90s", "$5", "20%", "1/2", "½", "(",
           ")", '"', "'", "“", "”", "’s", "...", "--", "-", "—", ",", ".", ";", ":", "!",
           "?", "Mr.", "Dr.", "U.S.", "etc.", "e.g.", "vs.", "a.m.", "naïve", "café",
           "Zürich", "señor", "北京", "A", "I", "St.", "no.", "x."]
_KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like sentences, a quarter of their tokens punctuation or special forms."""
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        words = [rng.choice(_EXTRAS) if rng.random() < 0.25 else rng.choice(_WORDS)
                 for _ in range(rng.randint(3, 14))]
        text = " ".join(words)
        text = text[0].upper() + text[1:] if rng.random() < 0.6 else text
        captions.append(text + rng.choice(["", ".", " .", "!", "?"]))
    return captions


def write_synthetic(folder: Path, images: int, refs_per_image: int = 5) -> tuple[str, str]:
    """A COCO results file and a COCO captions file of synthetic captions."""
    caps = synthetic_captions(images * (refs_per_image + 1), seed=11)
    anns = [{"image_id": i, "id": refs_per_image * i + j,
             "caption": caps[refs_per_image * i + j]}
            for i in range(images) for j in range(refs_per_image)]
    results = [{"image_id": i, "caption": caps[refs_per_image * images + i]}
               for i in range(images)]
    res, refs = folder / "results.json", folder / "references.json"
    res.write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
    refs.write_text(json.dumps({"images": [{"id": i} for i in range(images)],
                                "annotations": anns}, ensure_ascii=False), encoding="utf-8")
    return str(res), str(refs)


def compare(results: str, references: str, split: str | None = None) -> dict:
    """{metric: (java corpus, python corpus, max per-image |difference|)} and timings."""
    metrics = ["BLEU", "ROUGE_L", "CIDEr"]
    start = time.perf_counter()
    java = evaluate(results, references, split, metrics, java=True, per_image=True)
    mid = time.perf_counter()
    python = evaluate(results, references, split, metrics, java=False, per_image=True)
    end = time.perf_counter()
    rows = {k: (java[k], python[k], max(abs(a[k] - b[k]) for a, b in
                                        zip(java["per_image"], python["per_image"])))
            for k in _KEYS}
    return {"rows": rows, "images": len(java["per_image"]), "java_s": mid - start,
            "python_s": end - mid}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m coco_caption.agreement",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?")
    p.add_argument("references", nargs="?")
    p.add_argument("--split")
    p.add_argument("--synthetic", type=int, metavar="IMAGES",
                   help="score synthetic captions for this many images instead")
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args(argv)
    if (args.synthetic is None) == (args.results is None or args.references is None):
        p.error("give RESULTS and REFERENCES, or --synthetic IMAGES")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = (write_synthetic(Path(tmp), args.synthetic) if args.synthetic
                     else (args.results, args.references))
            report = compare(*files, split=args.split)
    except VLPError as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"{report['images']} images; Java backend {report['java_s']:.1f} s, "
          f"Java-free backend {report['python_s']:.1f} s")
    print(f"{'metric':8}  {'java':>9}  {'no-java':>9}  max |per-image diff|")
    worst = 0.0
    for key, (j, py, diff) in report["rows"].items():
        print(f"{key:8}  {j:9.6f}  {py:9.6f}  {diff:.2e}")
        worst = max(worst, diff)
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
