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

from ..errors import UserError
from .findings import Findings

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_config(config: dict[str, Any], what: str = "image config") -> None:
    """Refuse a ``config`` whose Env, Entrypoint or Cmd is not a list of strings, or whose
    WorkingDir is not a string (the image spec's types; null means absent)."""
    for key in ("Env", "Entrypoint", "Cmd"):
        value = config.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(w, str) for w in value)
        ):
            raise UserError(f"{what}: config.{key} must be a list of strings, not {_type(value)}")
    workdir = config.get("WorkingDir")
    if workdir is not None and not isinstance(workdir, str):
        raise UserError(f"{what}: config.WorkingDir must be a string, not {_type(workdir)}")


def _type(value: object) -> str:
    if isinstance(value, list):
        return "a list holding " + ", ".join(
            sorted({_type(v) for v in value if not isinstance(v, str)})
        )
    return {
        dict: "an object",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null")


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
