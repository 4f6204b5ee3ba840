"""The flags of `vlp eval-vqa`, `vlp score-vqa` and `vlp eval-grounding`, shared by the
commands and by training runs that evaluate their own checkpoints."""

from __future__ import annotations

import argparse

from vlp.data.sources import add_feature_flags
from vlp.flags import add_accepted_flags, add_run_flags, int_at_least


def add_metric_flag(p) -> None:
    """--vqa_metric, shared with `vlp eval-vqa`."""
    p.add_argument("--vqa_metric", choices=("official", "pre2021"), default="official",
                   help="official: vqaEval.py as it is since 2021-03-11 (prediction and "
                   "ground truth normalised alike when the ten answers differ); pre2021: "
                   "the earlier tool, which VLP's eval_vqa2.py ran (prediction always "
                   "normalised, ground truth only stripped of punctuation)")


def add_vqa_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = p.add_argument_group("VLP's flags (same meanings)")
    g.add_argument("--model_recover_path", required=True,
                   help="VQA checkpoint directory (a glob evaluates each match)")
    g.add_argument("--src_file", required=True,
                   help="questions JSON (official VQA v2) or Pythia imdb .npy")
    g.add_argument("--split", default="val2014",
                   help="a name for the outputs; test-dev / test-std (test-dev2015 / "
                   "test2015) write the challenge's file")
    g.add_argument("--batch_size", type=int_at_least(1), default=50)
    g.add_argument("--new_segment_ids", action="store_true",
                   help="accepted; the checkpoint's config says which scheme it uses")
    g.add_argument("--file_valid_jpgs", default=None, help="accepted; every question is answered")
    g.add_argument("--len_vis_input", type=int_at_least(1), default=100)
    g.add_argument("--max_len_b", "--max_tgt_length", type=int_at_least(1), default=20,
                   help="question tokens kept (VLP's eval_vqa2.py called it --max_tgt_length)")
    g.add_argument("--dataset", choices=("coco", "flickr30k", "cc"), default="coco")
    g.add_argument("--bert_model", default=None,
                   help="BERT directory with the vocabulary (default: the checkpoint's)")
    g.add_argument("--do_lower_case", action="store_true")
    add_feature_flags(g)
    # Answers are classified, not decoded, and evaluation has no dropout or sampling.
    add_accepted_flags(p, "eval_vqa2.py", ("--fp16", "--amp", "--forbid_duplicate_ngrams"),
                       (("--seed", int), ("--drop_prob", float), ("--beam_size", int),
                        ("--length_penalty", float), ("--forbid_ignore_word", str),
                        ("--min_len", int), ("--ngram_size", int)))
    m = p.add_argument_group("further flags")
    m.add_argument("--vqa_annotations", "--ref_file", default=None,
                   help="annotations JSON of the split: the answers are scored (VLP's --ref_file)")
    add_metric_flag(m)
    m.add_argument("--image_map", nargs="+", default=None,
                   help="Karpathy-style JSON mapping image ids to file names (store keys)")
    m.add_argument("--answer_vocab", default=None,
                   help="answer vocabulary (default: the checkpoint's answer_vocab.json)")
    m.add_argument("--method", default="vlp", help="method name in the leaderboard file name")
    add_run_flags(m)
    return p


def add_grounding_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model_recover_path", required=True,
                   help="localization checkpoint directory (a glob evaluates each match)")
    p.add_argument("--src_file", required=True,
                   help="refs(<split_by>).p of RefCOCO, RefCOCO+ or RefCOCOg, with "
                   "instances.json beside it")
    p.add_argument("--split", nargs="+", default=["val"],
                   help="splits as refer.py names them (val, testA, testB, test...), each "
                   "scored on its own")
    p.add_argument("--grounding_objective", choices=("auto", "regions", "centre"),
                   default="auto",
                   help="the head that picks the region: regions (scores each region), centre "
                   "(the region nearest the referent centre it predicts); auto: regions where "
                   "the checkpoint has that head, else centre")
    p.add_argument("--len_vis_input", type=int_at_least(1), default=100)
    p.add_argument("--max_len_b", type=int_at_least(1), default=20,
                   help="expression tokens kept")
    p.add_argument("--batch_size", type=int_at_least(1), default=64)
    p.add_argument("--bert_model", default=None,
                   help="BERT directory with the vocabulary (default: the checkpoint's)")
    p.add_argument("--do_lower_case", action="store_true")
    add_feature_flags(p)
    add_run_flags(p)
    return p
