"""The `vlp` command: one subcommand per module listed in COMMANDS.

Each command module defines `register(subparsers)`, which adds its parser and sets
`run=<function(args) -> int | None>`. Modules import heavy libraries (torch) inside
`run`, so `vlp --help` stays fast. Expected errors (VLPError, OSError) become one line
on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from vlp import __version__
from vlp.cli.args import ArgumentParser
from vlp.errors import VLPError

# Order is the order shown by `vlp --help`.
COMMANDS = ("quickstart", "toyworld", "convert_features", "convert_checkpoint",
            "train_detector", "extract", "merge_stores", "train",
            "decode", "caption", "ask", "locate", "serve", "eval", "eval_vqa", "score_vqa",
            "eval_grounding",
            "validate_vqa_submission")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="vlp",
        description="Unified Vision-Language Pre-training: features, pretraining, "
        "captioning, SCST, VQA and localization from text.",
    )
    parser.add_argument("--version", action="version", version=f"vlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"vlp.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except VLPError as err:
        return _fail(args.command, str(err))
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        return _fail(args.command, f"{err.strerror or err}{where}")
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", status=130)


def _fail(command: str, message: str, status: int = 2) -> int:
    print(f"vlp {command}: error: {message}", file=sys.stderr)
    return status
