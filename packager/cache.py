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
from rewriter.trailer import TrailerState, check_trailer_tail, trailer_size

from . import __version__
from .errors import UserError
from .fsutil import write_atomic
from .jsonload import loads


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


_OUTCOMES = ("patched", "checked-nothing-to-patch", "unchanged", "already-hooked")
# Bits a patched rewrite may flip in the input's own bytes: about 25 per site (a jump and its
# padding), plus the fork patch and header fix-ups. Another file's bytes differ in about half
# of all bits, so a swapped entry cannot pass.
BITS_PER_SITE = 128
BITS_EXTRA = 512
_CHUNK = 1 << 20  # bytes compared at a time


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def entry_problem(meta: Any, out_path: Path, source: str) -> str | None:
    """Why a cache entry (metadata ``meta``, stored bytes at ``out_path``) cannot be the rewrite
    of ``source``, or None when it is consistent: the metadata's shape, the sha256, the outcome
    against the trailer, and how far the bytes stray from the input. Both files are streamed,
    so a hit on a large library does not bring it into the main process's memory."""
    if not isinstance(meta, dict):
        return "metadata is not an object"
    sha, o = meta.get("sha256_out"), meta.get("outcome")
    if not isinstance(sha, str) or not isinstance(o, dict):
        return "metadata lacks sha256_out or outcome"
    kind, sites, unpatchable = o.get("outcome"), o.get("sites"), o.get("unpatchable", [])
    t = o.get("trampoline")
    if kind not in _OUTCOMES or not _int(sites) or not isinstance(unpatchable, list):
        return "outcome of the wrong shape"
    if not isinstance(o.get("strategies", {}), dict) or not (
        t is None or (isinstance(t, dict) and _int(t.get("size")))
    ):
        return "outcome of the wrong shape"
    with open(out_path, "rb") as out, open(source, "rb") as inp:
        n_out, n_in = os.fstat(out.fileno()).st_size, os.fstat(inp.fileno()).st_size
        bits = 32 if inp.read(5)[4:5] == b"\x01" else 64
        inp.seek(0)
        digest, flipped, prefix_equal = hashlib.sha256(), 0, True
        while chunk := out.read(_CHUNK):
            digest.update(chunk)
            theirs = inp.read(len(chunk))  # empty past the input's end: the appended blob
            mine = chunk[: len(theirs)]
            if mine != theirs:
                prefix_equal = False
                flipped += (int.from_bytes(mine) ^ int.from_bytes(theirs)).bit_count()
        out.seek(max(0, n_out - trailer_size(bits)))
        check = check_trailer_tail(out.read(), n_out, bits)
    if digest.hexdigest() != sha:
        return "bytes do not match their sha256"
    if kind in ("unchanged", "already-hooked"):
        same = prefix_equal and n_out == n_in
        return None if same else f"outcome {kind}, but the bytes are not the input's"
    trailer = check.trailer
    if check.state is not TrailerState.VALID or trailer is None or n_out < n_in:
        return f"outcome {kind}, but the bytes carry no valid trailer"
    if kind == "checked-nothing-to-patch":
        if trailer.size or not prefix_equal:
            return "outcome checked-nothing-to-patch, but the bytes are not the input's + marker"
        return None
    if t is None or trailer.size != t["size"] or not trailer.size:
        return "outcome patched, but the trailer disagrees with the recorded trampoline"
    if not 0 <= trailer.file_offset - n_in < 4096:
        return "outcome patched, but the trampoline is not where the input ends"
    if flipped > BITS_PER_SITE * (int(sites or 0) + len(unpatchable)) + BITS_EXTRA:
        return f"bytes differ from the input far beyond {sites} patched site(s)"
    return None


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

    def get(self, key: str, source: str) -> tuple[Path, dict[str, Any]] | None:
        """(path of the stored bytes, metadata) for the rewrite of ``source``, or None.

        The entry is checked against the bytes it describes (see :func:`entry_problem`); a bad
        one is deleted with a warning and the caller rewrites the file again."""
        data_path, meta_path = self._paths(key)
        try:
            meta_bytes = meta_path.read_bytes()
            meta = loads(meta_bytes, str(meta_path))
        except OSError:
            return None  # no entry (or a torn one being replaced): a miss
        except UserError as e:
            problem: str | None = str(e).removeprefix(f"{meta_path}: ")
        else:
            try:
                problem = entry_problem(meta, data_path, source)
            except OSError:
                return None
        if problem is not None:
            self._drop(key, source, problem)
            return None
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # a hit is a use: pruning removes the least recently used
        return data_path, meta

    def _drop(self, key: str, source: str, problem: str) -> None:
        from .console import warn  # the main process only; workers never read the cache

        warn(f"{self.root}/{key[:2]}/{key}: cache entry for {source} dropped ({problem})")
        for path in self._paths(key):
            with contextlib.suppress(OSError):
                path.unlink()

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
