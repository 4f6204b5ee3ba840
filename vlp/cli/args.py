"""Argument parsing shared by every `vlp` subcommand."""

from __future__ import annotations

import argparse

from vlp.flags import (ArgumentParser, add_accepted_flags, int_at_least, probability,
                       run_script)

__all__ = ["ArgumentParser", "add_accepted_flags", "add_command", "int_at_least", "probability",
           "run_script"]


def add_command(subparsers, name: str, run, help: str, description: str | None = None):
    """Add subcommand `name` whose parser calls `run(args)`; returns the parser."""
    parser = subparsers.add_parser(
        name, help=help, description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser
