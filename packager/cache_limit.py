"""Size accounting and pruning of litebox-pack's cache directory.

The cache holds rewrite results (``rewrite/XX/KEY.bin`` and ``KEY.json``, one entry) and built
runtimes (``runtime/HASH/``, one entry). Pruning removes whole entries, least recently used
first: an entry's last use is the newest mtime or atime of its files (a rewrite hit touches its
files, so this works on file systems mounted ``noatime`` too).

After every pack that stored something new, the cache is pruned to its cap (default 2 GiB,
``LITEBOX_PACK_CACHE_MAX`` overrides it; ``0`` turns the cap off). That automatic pruning leaves
alone what was used in the last hour, so a packager running at the same time never loses an
entry it is about to read; ``litebox-pack cache prune`` and ``clear`` take everything.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .console import warn
from .errors import UsageError

DEFAULT_MAX_SIZE = 2 << 30
MAX_SIZE_ENV = "LITEBOX_PACK_CACHE_MAX"
AUTO_PRUNE_GRACE = 3600.0  # seconds an entry is safe from automatic pruning after its last use

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``2G``, ``500M``, ``1.5GiB``, ``4096``: binary units, case-insensitive."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if m is None:
        raise UsageError(f"{text!r}: not a size (examples: 500M, 2G, 1.5GiB, 4096)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    """``812 B``, ``4.0 KiB``, ``43.9 MiB``, ``2.0 GiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def max_size() -> int | None:
    """The automatic cap in bytes, or None when ``LITEBOX_PACK_CACHE_MAX=0`` turns it off."""
    raw = os.environ.get(MAX_SIZE_ENV)
    try:
        size = parse_size(raw) if raw else DEFAULT_MAX_SIZE
    except UsageError as e:
        raise UsageError(f"{MAX_SIZE_ENV}: {e}") from None
    return size or None


@dataclass(frozen=True)
class Entry:
    """What pruning removes at once, and when it was last used."""

    paths: tuple[Path, ...]  # removed in this order (a rewrite entry's metadata first)
    size: int
    last_used: float


def _file(path: Path) -> tuple[int, float] | None:
    try:
        st = path.lstat()
    except OSError:
        return None  # removed meanwhile (another packager pruning)
    return st.st_size, max(st.st_mtime, st.st_atime)


def _tree(path: Path) -> tuple[int, float]:
    size, used = 0, 0.0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            got = _file(Path(dirpath) / name)
            if got is not None:
                size, used = size + got[0], max(used, got[1])
    return size, used


def entries(root: Path) -> list[Entry]:
    """Every entry of the cache under ``root`` (the ``litebox-pack`` directory)."""
    out: list[Entry] = []
    rewrite = root / "rewrite"
    groups: dict[Path, list[Path]] = {}
    for dirpath, _dirs, files in os.walk(rewrite):
        for name in files:
            # KEY.bin and KEY.json belong together; a temporary name is an entry of its own.
            stem = name.rsplit(".", 1)[0] if name.endswith((".bin", ".json")) else name
            groups.setdefault(Path(dirpath) / stem, []).append(Path(dirpath) / name)
    for group in groups.values():
        group.sort(key=lambda p: p.suffix != ".json")  # metadata first: no entry without data
        stats = [s for s in map(_file, group) if s is not None]
        if stats:
            size = sum(s[0] for s in stats)
            out.append(Entry(tuple(group), size, max(s[1] for s in stats)))
    for top in _listdir(root):
        if top.name == "rewrite":
            continue
        children = _listdir(top) if top.name == "runtime" and top.is_dir() else [top]
        for child in children:
            if child.is_dir() and not child.is_symlink():
                size, used = _tree(child)
                out.append(Entry((child,), size, used))
            elif (got := _file(child)) is not None:
                out.append(Entry((child,), got[0], got[1]))
    return out


def _listdir(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def total_size(found: list[Entry]) -> int:
    return sum(e.size for e in found)


def _remove(entry: Entry) -> None:
    for path in entry.paths:
        try:
            if stat.S_ISDIR(path.lstat().st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another packager removed it meanwhile


def prune(root: Path, limit: int, *, grace: float = 0.0) -> tuple[int, int]:
    """Remove least recently used entries until the cache holds at most ``limit`` bytes.

    Entries used within the last ``grace`` seconds are kept. Returns (entries removed, bytes
    freed). Raises OSError when an entry cannot be removed.
    """
    found = sorted(entries(root), key=lambda e: e.last_used)
    size = total_size(found)
    removed = freed = 0
    keep_after = time.time() - grace
    for entry in found:
        if size <= limit:
            break
        if grace and entry.last_used > keep_after:
            continue
        _remove(entry)
        freed += entry.size
        size -= entry.size
        removed += 1
    return removed, freed


def auto_prune(root: Path) -> None:
    """Apply the default cap after a pack; a cache that cannot be pruned is only bigger."""
    try:
        limit = max_size()
    except UsageError as e:
        # The bundle is written by now: a bad setting must not turn it into a failure.
        warn(f"{e}; the cache is not pruned")
        return
    if limit is None:
        return
    with contextlib.suppress(OSError):
        prune(root, limit, grace=AUTO_PRUNE_GRACE)
