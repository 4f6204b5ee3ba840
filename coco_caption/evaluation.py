"""`evaluate`: score a results file against references with BLEU, METEOR, ROUGE-L,
CIDEr-D and SPICE, on the Java tools (default) or in pure Python (`java=False`)."""

from __future__ import annotations

import warnings
from typing import Iterable

from coco_caption import cider, ptb, scorers
from coco_caption.io import Source, pair
from vlp.errors import VLPError

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
PYTHON_METRICS = ("BLEU", "ROUGE_L", "CIDEr")
_ALIASES = {"bleu": "BLEU", "meteor": "METEOR", "rouge_l": "ROUGE_L", "rouge": "ROUGE_L",
            "rouge-l": "ROUGE_L", "cider": "CIDEr", "cider-d": "CIDEr", "spice": "SPICE"}


class SpiceUnavailable(UserWarning):
    """SPICE was asked for but cannot run here; the other metrics are still computed."""


def metric_names(metrics: Iterable[str] | None, java: bool) -> list[str]:
    if metrics is None:
        return list(METRICS if java else PYTHON_METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for m in metrics:
        name = _ALIASES.get(m.lower(), "BLEU" if m.lower().startswith("bleu_") else None)
        if name is None:
            raise VLPError(f"--metrics: unknown metric {m!r} (choose from {', '.join(METRICS)})")
        if not java and name not in PYTHON_METRICS:
            raise VLPError(f"--metrics: {name} needs Java; with --no-java choose from "
                           f"{', '.join(PYTHON_METRICS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise VLPError("--metrics: no metric given")
    return names


def evaluate(results: Source, references: Source, split: str | None = None,
             metrics: Iterable[str] | None = None, java: bool = True,
             per_image: bool = False) -> dict:
    """Score captions; returns {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE": float}
    for the metrics asked, plus "per_image": [{"image_id", <metric>: float}] if per_image.

    `results`/`references` are file paths or the loaded JSON. Only images in the results
    are scored (CIDEr-D's document frequencies come from their references, as in
    coco-caption). A skipped SPICE gives a `SpiceUnavailable` warning and no "SPICE" key.
    """
    names = metric_names(metrics, java)
    pairs = pair(results, references, split)
    flat_refs = [r for refs in pairs.references for r in refs]
    # coco-caption tokenizes all references, then all candidates, in image order; the order
    # matters because the tokenizer looks into the next line.
    if java:
        from coco_caption import java as tools
        ref_tokens = tools.ptb_tokenize(flat_refs)
        cand_tokens = tools.ptb_tokenize(pairs.candidates)
    else:
        ref_tokens = ptb.tokenize_lines(flat_refs)
        cand_tokens = ptb.tokenize_lines(pairs.candidates)
    refs, start = [], 0
    for r in pairs.references:
        refs.append(ref_tokens[start:start + len(r)])
        start += len(r)
    scores, images = {}, {}
    for name in names:
        for key, (corpus, each) in _score(name, cand_tokens, refs, java).items():
            scores[key] = float(corpus)
            images[key] = each
    if per_image:
        scores["per_image"] = [
            {"image_id": image_id, **{k: float(v[i]) for k, v in images.items()}}
            for i, image_id in enumerate(pairs.ids)]
    return scores


def _score(name: str, cands: list[str], refs: list[list[str]], java: bool) -> dict:
    if name == "BLEU":
        if java:
            from pycocoevalcap.bleu.bleu import Bleu
            corpus, each = Bleu(4).compute_score(*_coco_dicts(cands, refs), verbose=0)
            each = [list(x) for x in zip(*each)]
        else:
            corpus, each = scorers.bleu(cands, refs)
        return {f"Bleu_{k + 1}": (float(corpus[k]), [row[k] for row in each])
                for k in range(4)}
    if name == "ROUGE_L":
        if java:
            from pycocoevalcap.rouge.rouge import Rouge
            return {"ROUGE_L": Rouge().compute_score(*_coco_dicts(cands, refs))}
        return {"ROUGE_L": scorers.rouge_l(cands, refs)}
    if name == "CIDEr":
        if java:
            from pycocoevalcap.cider.cider import Cider
            return {"CIDEr": Cider().compute_score(*_coco_dicts(cands, refs))}
        return {"CIDEr": cider.corpus_cider_d(cands, refs)}
    from coco_caption import java as tools
    if name == "METEOR":
        return {"METEOR": tools.meteor(cands, refs)}
    missing = tools.spice_missing()
    if missing:
        warnings.warn(f"SPICE skipped: {missing}", SpiceUnavailable, stacklevel=3)
        return {}
    return {"SPICE": tools.spice(cands, refs)}


def _coco_dicts(cands: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    """pycocoevalcap's (gts, res) dicts, keyed by position."""
    return {i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)}
