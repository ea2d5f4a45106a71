"""``litebox/config_and_run.sh``: the image's Env, WorkingDir, Entrypoint and Cmd as a script.

LiteBox's runner passes only its own ``--env`` options, so the image's environment reaches the
program through this script, run as ``/bin/sh /litebox/config_and_run.sh [ARGS...]``. The layout
follows upstream's generator line for line (reference §3.6): exports in image order, ``cd``,
then the default command, which caller arguments replace entirely (unlike Docker, where they
replace only Cmd). Every value is single-quoted; names that are not shell identifiers cannot
be exported by sh at all, so they are skipped (and reported) instead of written raw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .findings import Findings

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def run_script(config: dict[str, Any], findings: Findings) -> bytes:
    """The script for an image config's ``config`` object (may be empty)."""
    env: Sequence[str] = config.get("Env") or []
    workdir = config.get("WorkingDir") or "/"
    entrypoint: Sequence[str] = config.get("Entrypoint") or []
    cmd: Sequence[str] = config.get("Cmd") or []
    lines = ["#!/bin/sh"]
    for item in env:
        name, sep, value = str(item).partition("=")
        if not sep or not _NAME.match(name):
            findings.add("env", str(item))
            continue
        lines.append(f"export {name}={quote(value)}")
    lines.append(f"cd {quote(str(workdir))}")
    default = [*entrypoint, *cmd]
    if default:
        words = " ".join(quote(str(w)) for w in default)
        lines += [
            'if [ "$#" -gt 0 ]; then',
            '    exec "$@"',
            "else",
            f"    exec {words}",
            "fi",
        ]
    else:
        lines.append('exec "$@"')
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def default_command(config: dict[str, Any]) -> list[str]:
    return [str(w) for w in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]
