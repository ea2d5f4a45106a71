"""A strict reader for the tars LiteBox's tar_ro mounts, for tests.

Written independently of packager/tarball.py (it must catch that module's mistakes): it parses
every 512-byte block itself and enforces the contract of reference/litebox-packager-behaviour.md
§2.6/§4.2, plus the conventions litebox-pack promises (owner 1000, mtime 0, no user/group names).
Anything tar_ro would panic on, silently skip, or read differently from what was meant raises
AssertionError with a message naming the offending member and field.

    members = read_strict(path_or_bytes)   # [Member(path, mode, data), ...] in archive order
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

BLOCK = 512
_TYPEFLAGS = {
    b"x": "PAX",
    b"g": "PAX global",
    b"L": "GNU long name",
    b"K": "GNU long link",
    b"5": "directory",
    b"2": "symlink",
    b"1": "hard link",
    b"\0": "old-style regular file",
}


@dataclass(frozen=True)
class Member:
    path: str
    mode: int
    data: bytes
    offset: int  # archive offset of the header block

    def __iter__(self) -> Iterator[str | int | bytes]:
        # lets callers unpack `path, mode, data = member`
        return iter((self.path, self.mode, self.data))


def _fail(where: str, message: str) -> NoReturn:
    raise AssertionError(f"tar_ro violation at {where}: {message}")


def _cstring(field: bytes, where: str, what: str) -> bytes:
    end = field.find(b"\0")
    if end < 0:
        return field  # a full-width field needs no terminator in ustar
    if any(field[end:]):
        _fail(where, f"{what} has bytes after its NUL terminator: {field!r}")
    return field[:end]


def _octal(field: bytes, where: str, what: str) -> int:
    # Plain octal digits, optionally followed by NUL/space terminators; no base-256, no blanks.
    text = field.rstrip(b"\0 ")
    if not text:
        _fail(where, f"{what} field is empty: {field!r}")
    if field[0] & 0x80:
        _fail(where, f"{what} uses base-256 encoding: {field!r}")
    if any(c not in b"01234567" for c in text):
        _fail(where, f"{what} is not octal: {field!r}")
    if field[len(text) :].strip(b"\0 "):
        _fail(where, f"{what} has junk after its digits: {field!r}")
    return int(text, 8)


def _check_path(path: str, where: str) -> None:
    if path.startswith("/"):
        _fail(where, f"path {path!r} is absolute (tar_ro drops the empty component)")
    if path.endswith("/"):
        _fail(where, f"path {path!r} ends with '/'")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            _fail(where, f"path {path!r} has a {part or 'empty'!r} component")


def read_strict(source: bytes | bytearray | str | os.PathLike[str]) -> list[Member]:
    """Parse ``source`` (archive bytes or a path to one) under tar_ro's rules; return its files."""
    data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    size = len(data)
    if size % BLOCK:
        _fail("archive", f"size {size} is not a multiple of {BLOCK}")
    if size < 3 * BLOCK:
        _fail("archive", f"size {size} is less than 3 blocks")
    members: list[Member] = []
    files: dict[str, int] = {}
    dirs: dict[str, str] = {}
    off = 0
    last_payload_end = 0
    while True:
        if off + BLOCK > size:
            _fail("archive", "no end-of-archive marker (two zero blocks)")
        header = data[off : off + BLOCK]
        where = f"offset {off}"
        if not any(header):
            break
        stored = header[148:156]
        computed = sum(header[:148]) + 8 * 0x20 + sum(header[156:])
        if _octal(stored, where, "checksum") != computed:
            _fail(where, f"checksum {stored!r} != computed {computed:o}")
        if header[257:263] != b"ustar\0" or header[263:265] != b"00":
            _fail(where, f"magic/version {header[257:265]!r} is not ustar\\0 00 (GNU or v7 header)")
        typeflag = header[156:157]
        if typeflag != b"0":
            kind = _TYPEFLAGS.get(typeflag, "other")
            _fail(where, f"typeflag {typeflag!r} ({kind}); only '0' allowed")
        try:
            name = _cstring(header[0:100], where, "name").decode("utf-8")
            prefix = _cstring(header[345:500], where, "prefix").decode("utf-8")
        except UnicodeDecodeError as e:
            _fail(where, f"name is not UTF-8 ({e})")
        if any(header[500:512]):
            _fail(where, "bytes 500..512 (after prefix) are not zero")
        if not name:
            _fail(where, "empty name field")
        path = f"{prefix}/{name}" if prefix else name
        where = f"{where} ({path!r})"
        if len(path.encode("utf-8")) > 256:
            _fail(where, "path longer than 256 bytes")
        _check_path(path, where)
        if _cstring(header[157:257], where, "linkname"):
            _fail(where, "linkname is set on a regular file")
        mode = _octal(header[100:108], where, "mode")
        if mode & ~0o777:
            _fail(where, f"mode {mode:#o} has bits outside 0o777")
        for field, at in (("uid", 108), ("gid", 116)):
            value = _octal(header[at : at + 8], where, field)
            if value != 1000:
                _fail(where, f"{field} {value} != 1000")
        mtime = _octal(header[136:148], where, "mtime")
        if mtime != 0:
            _fail(where, f"mtime {mtime} != 0")
        if any(header[265:329]):
            _fail(where, f"uname/gname not empty: {header[265:329].rstrip(bytes(1))!r}")
        length = _octal(header[124:136], where, "size")
        start = off + BLOCK
        end = start + length
        padded = start + -(-length // BLOCK) * BLOCK
        if padded > size:
            _fail(where, f"payload of {length} bytes runs past the end of the archive")
        if any(data[end:padded]):
            _fail(where, "payload padding is not zero")
        if path in files:
            _fail(where, f"duplicate path (first at offset {files[path]})")
        if path in dirs:
            _fail(where, f"path is a file and also the directory of {dirs[path]!r}")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in files:
                _fail(where, f"its directory {parent!r} is a file")
            dirs.setdefault(parent, path)
        files[path] = off
        members.append(Member(path, mode, data[start:end], off))
        last_payload_end = end
        off = padded
    if any(data[off:]):
        _fail(f"offset {off}", "non-zero bytes after the end-of-archive marker")
    if size - off < 2 * BLOCK:
        _fail("archive", f"ends {size - off} bytes after the last header; needs two zero blocks")
    if size - last_payload_end < 2 * BLOCK:
        _fail("archive", "last payload ends less than 1024 bytes before the end")
    return members
