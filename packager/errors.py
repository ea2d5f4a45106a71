"""Errors the CLI turns into one line on stderr and an exit status."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a bad input, a missing file, a refused option.

    The message is one line naming the file and the reason; the CLI prints it and exits 1.
    """

    exit_code = 1


class UsageError(UserError):
    """The command line itself is wrong (exit 2, like argument parsing errors)."""

    exit_code = 2
