"""`vlp eval-vqa`: answer a VQA split with a checkpoint, score it or write the
leaderboard file (VLP's eval_vqa2.py flags; `python -m vlp.eval_vqa2` takes the same)."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command
from vlp.eval.args import add_vqa_arguments as add_arguments


def register(subparsers) -> None:
    p = add_command(subparsers, "eval-vqa", run,
                    help="answer VQA questions with a checkpoint; score them, or write the "
                         "test-dev/test-std file the challenge expects")
    add_arguments(p)


def run(args) -> int:
    from vlp.eval.vqa_predict import evaluate

    evaluate(args)
    return 0


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
