"""`vlp eval-grounding`: locate the referents of RefCOCO-style expressions with a
localization checkpoint (`vlp train --tasks refcoco`) and score Acc@0.5."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command
from vlp.eval.args import add_grounding_arguments as add_arguments


def register(subparsers) -> None:
    p = add_command(subparsers, "eval-grounding", run,
                    help="locate referring expressions (RefCOCO, RefCOCO+, RefCOCOg) with a "
                         "checkpoint; Acc@0.5 per split, overall and per expression kind")
    add_arguments(p)


def run(args) -> int:
    from vlp.eval.grounding_predict import evaluate

    evaluate(args)
    return 0


def main(argv: list[str] | None = None, prog: str = "vlp eval-grounding") -> int:
    """The command with these flags, callable from Python."""
    from vlp.cli.args import ArgumentParser, run_script
    from vlp.eval.grounding_predict import evaluate

    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Locate referring expressions with a checkpoint.")
    return run_script(add_arguments(parser), evaluate, argv)
