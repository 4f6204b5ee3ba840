"""`python -m coco_caption RESULTS REFERENCES`: print a metrics table.

Expected errors (bad files, unknown metrics, no Java) are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from coco_caption.evaluation import METRICS, evaluate
from vlp.errors import VLPError

PROG = "python -m coco_caption"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Score captions with coco-caption's "
                                "metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE).")
    p.add_argument("results", help='COCO results JSON: [{"image_id", "caption"}]')
    p.add_argument("references", help="COCO captions JSON (captions_val2014.json style) or "
                   "Karpathy JSON (with --split)")
    p.add_argument("--split", help="Karpathy split to read (val, test, ...)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help=f"any of {' '.join(METRICS)} (default: all; with --no-java: "
                   "BLEU ROUGE_L CIDEr)")
    p.add_argument("--per-image", metavar="OUT.json", help="write per-image scores here")
    p.add_argument("--out", metavar="METRICS.json", help="write the corpus scores here")
    p.add_argument("--no-java", action="store_true", help="pure-Python tokenizer, BLEU, "
                   "ROUGE-L and CIDEr-D (no METEOR or SPICE)")
    return p


def format_table(scores: dict) -> str:
    rows = [(k, v) for k, v in scores.items() if k != "per_image"]
    width = max(len(k) for k, _ in rows) if rows else 6
    return "\n".join([f"{'metric':<{width}}  score", *(f"{k:<{width}}  {v:.4f}"
                                                      for k, v in rows)])


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        scores = evaluate(args.results, args.references, split=args.split,
                          metrics=args.metrics, java=not args.no_java,
                          per_image=args.per_image is not None)
        per_image = scores.pop("per_image", None)
        if args.per_image:
            _write(args.per_image, per_image)
        if args.out:
            _write(args.out, scores)
    except VLPError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"{PROG}: error: {err.strerror or err}: {err.filename or ''}", file=sys.stderr)
        return 2
    print(format_table(scores))
    return 0


def _write(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
