"""A content-addressed cache of rewrite results in the user's cache directory.

The key covers everything the output depends on: the input bytes, the rewrite options, the tool
version and the rewriter's own source (so a development change never serves a stale result).
Entries are written to a temporary name and renamed, so two packagers may share the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import rewriter

from . import __version__
from .errors import UserError
from .fsutil import write_atomic


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "litebox-pack"


@cache
def rewriter_fingerprint() -> str:
    """Hash of the rewriter's source files: part of every cache key."""
    h = hashlib.sha256(__version__.encode())
    src = Path(rewriter.__file__).parent
    for path in sorted(src.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_key(input_sha256: str, options: dict[str, Any]) -> str:
    material = json.dumps(
        {"in": input_sha256, "options": options, "rewriter": rewriter_fingerprint()},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


class RewriteCache:
    """Stores ``(output bytes, outcome JSON)`` under a key; misses return None."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / "rewrite"

    def _paths(self, key: str) -> tuple[Path, Path]:
        d = self.root / key[:2]
        return d / f"{key}.bin", d / f"{key}.json"

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """(path of the stored bytes, metadata), verified against the recorded sha256."""
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            with data_path.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        except (OSError, ValueError):
            return None
        if digest != meta.get("sha256_out"):
            return None  # a torn or tampered entry is a miss, never a wrong answer
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # a hit is a use: pruning removes the least recently used
        return data_path, meta

    def put(self, key: str, data: bytes, meta: dict[str, Any]) -> Path | None:
        """Store an entry; return the path of its bytes, or None when the cache is unwritable."""
        data_path, meta_path = self._paths(key)
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            # Data first, then the metadata that vouches for it: a reader never sees meta
            # without its data.
            write_atomic(data_path, data)
            write_atomic(meta_path, json.dumps(meta, sort_keys=True).encode())
        except (OSError, UserError):
            return None  # a cache that cannot be written is only slower
        return data_path
