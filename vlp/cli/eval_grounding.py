"""`vlp eval-grounding`: locate the referents of RefCOCO-style expressions with a
localization checkpoint (`vlp train --tasks refcoco`) and score Acc@0.5."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command, int_at_least
from vlp.data.sources import add_feature_flags


def register(subparsers) -> None:
    p = add_command(subparsers, "eval-grounding", run,
                    help="locate referring expressions (RefCOCO, RefCOCO+, RefCOCOg) with a "
                         "checkpoint; Acc@0.5 per split, overall and per expression kind")
    add_arguments(p)


def run(args) -> int:
    from vlp.eval.grounding_predict import evaluate

    evaluate(args)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
    p.add_argument("--output_dir", default=None,
                   help="where results go (default: beside the checkpoint)")
    p.add_argument("--num_workers", type=int_at_least(0), default=2)
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str] | None = None, prog: str = "vlp eval-grounding") -> int:
    """The command with these flags, callable from Python."""
    from vlp.cli.args import ArgumentParser, run_script
    from vlp.eval.grounding_predict import evaluate

    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Locate referring expressions with a checkpoint.")
    return run_script(add_arguments(parser), evaluate, argv)
