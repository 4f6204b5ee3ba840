"""Flag parsing shared by the `vlp` subcommands and the VLP-style scripts
(`python -m vlp.run_img2txt_dist`): one-line errors, argparse types, the entry point."""

from __future__ import annotations

import argparse
import sys

from vlp.errors import VLPError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (no usage dump) and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int):
    """argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def run_script(parser, run, argv=None) -> int:
    """A VLP-style entry point (`python -m vlp.run_img2txt_dist` and the like): parse
    `argv`, call `run(args)`; an expected error prints one line and returns 2."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except VLPError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def add_accepted_flags(p: argparse.ArgumentParser, script: str, switches: tuple[str, ...] = (),
                       values: tuple[tuple[str, type], ...] = ()) -> None:
    """Flags VLP's `script` defined that change nothing here, accepted so that its command
    lines run as they are; listed once in the help under their own heading."""
    g = p.add_argument_group(f"VLP's {script} flags that change nothing here (accepted)")
    for flag in switches:
        g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag, kind in values:
        g.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    g.description = " ".join([*switches, *(flag for flag, _ in values)])


def add_run_flags(p) -> None:
    """Where an evaluation's results go and how it runs: the flags every evaluating
    command shares."""
    p.add_argument("--output_dir", default=None,
                   help="where results go (default: beside the checkpoint)")
    p.add_argument("--num_workers", type=int_at_least(0), default=2)
    p.add_argument("--no_cuda", action="store_true")
    p.add_argument("--no_progress", action="store_true")
