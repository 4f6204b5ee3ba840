"""Caption evaluation: BLEU, METEOR, ROUGE-L, CIDEr-D and SPICE as coco-caption computes
them, on pycocoevalcap's Java tools or in pure Python (BLEU, ROUGE-L, CIDEr-D).

    from coco_caption import evaluate
    scores = evaluate("results.json", "captions_val2014.json")      # or java=False
"""

from coco_caption.cider import cider_d, corpus_cider_d, document_frequency, DocumentFrequency
from coco_caption.evaluation import METRICS, SpiceUnavailable, evaluate
from coco_caption.ptb import tokenize, tokenize_lines

__all__ = ["evaluate", "METRICS", "SpiceUnavailable", "tokenize", "tokenize_lines",
           "cider_d", "corpus_cider_d", "document_frequency", "DocumentFrequency"]
