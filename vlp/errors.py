"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class VLPError(Exception):
    """Bad input or configuration. The message names the file, id or flag at fault."""
