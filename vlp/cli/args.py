"""Argument parsing shared by every `vlp` subcommand."""

from __future__ import annotations

import argparse

from vlp.flags import ArgumentParser, int_at_least, probability, run_script

__all__ = ["ArgumentParser", "add_accepted_flags", "add_command", "int_at_least", "probability",
           "run_script"]


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


def add_command(subparsers, name: str, run, help: str, description: str | None = None):
    """Add subcommand `name` whose parser calls `run(args)`; returns the parser."""
    parser = subparsers.add_parser(
        name, help=help, description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser
