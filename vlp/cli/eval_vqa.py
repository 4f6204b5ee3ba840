"""`vlp eval-vqa`: answer a VQA split with a checkpoint, score it or write the
leaderboard file (VLP's eval_vqa2.py flags; `python -m vlp.eval_vqa2` takes the same)."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_accepted_flags, add_command, int_at_least
from vlp.cli.score_vqa import add_metric_flag
from vlp.data.sources import add_feature_flags


def register(subparsers) -> None:
    p = add_command(subparsers, "eval-vqa", run,
                    help="answer VQA questions with a checkpoint; score them, or write the "
                         "test-dev/test-std file the challenge expects")
    add_arguments(p)


def run(args) -> int:
    from vlp.eval.vqa_predict import evaluate

    evaluate(args)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    m.add_argument("--output_dir", default=None,
                   help="where results go (default: beside the checkpoint)")
    m.add_argument("--num_workers", type=int_at_least(0), default=2)
    m.add_argument("--no_cuda", action="store_true")
    m.add_argument("--no_progress", action="store_true")
    return p


def build_parser(prog: str = "vlp eval-vqa") -> argparse.ArgumentParser:
    from vlp.cli.args import ArgumentParser

    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Answer VQA questions with a checkpoint (VLP's flags).")
    return add_arguments(parser)


def main(argv: list[str] | None = None, prog: str = "vlp eval-vqa") -> int:
    """The command with these flags, callable from Python and VLP's script names."""
    from vlp.cli.args import run_script
    from vlp.eval.vqa_predict import evaluate

    return run_script(build_parser(prog), evaluate, argv)
