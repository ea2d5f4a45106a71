"""Writing outputs so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UserError


def check_output(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that cannot be written: a directory, or one in a missing directory.

    Returns its parent directory. Called before any work, so a bad ``-o`` fails fast.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{target}: output path is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{target}: output directory {parent} does not exist")
    return parent


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    target = Path(path)
    parent = check_output(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    with atomic_output(path, mode) as f:
        f.write(data)


def read_input(path: str | os.PathLike[str]) -> bytes:
    """Read a regular file, turning every failure into a one-line UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, not a file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read: {e.strerror or e}") from None
