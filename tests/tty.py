"""Run a command with a pseudo-terminal as its stdin, stdout and stderr (what a user sees)."""

from __future__ import annotations

import os
import pty


def run_on_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """(exit status, everything the command wrote to the terminal)."""
    out = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        out.extend(data)
        return data

    # pty.spawn passes the environment of this process: swap it in for the child's duration.
    old = os.environ.copy()
    os.environ.update(env)
    try:
        status = pty.spawn(argv, read)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
