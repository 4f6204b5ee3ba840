"""`vlp decode`: caption a split with greedy or beam search, write COCO results and metrics.

The flags are VLP's decode_img2txt.py flags; `python -m vlp.decode_img2txt` takes the same.
"""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command
from vlp.decode.args import add_arguments


def register(subparsers) -> None:
    p = add_command(subparsers, "decode", run,
                    help="caption a split (greedy / beam search with a K/V cache) and score it")
    add_arguments(p)


def run(args) -> int:
    from vlp.decode.run import decode

    decode(args)
    return 0


def build_parser(prog: str = "vlp decode") -> argparse.ArgumentParser:
    from vlp.cli.args import ArgumentParser

    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Caption a split with beam search (VLP's flags).")
    return add_arguments(parser)


def main(argv: list[str] | None = None, prog: str = "vlp decode") -> int:
    """The command with these flags, callable from Python and VLP's script names."""
    from vlp.cli.args import run_script
    from vlp.decode.run import decode

    return run_script(build_parser(prog), decode, argv)
