"""A streaming ustar writer whose output LiteBox's read-only tar filesystem (tar_ro) accepts.

We write the 512-byte headers ourselves instead of using ``tarfile``: tarfile silently switches
to PAX or GNU records for some inputs, pads names differently across versions, and keeps every
TarInfo in memory, while tar_ro stops reading (or panics) at anything but plain ustar regular
files. The contract (reference/litebox-packager-behaviour.md §2.6, §4.2):

* ustar magic/version, typeflag '0' only (directories are implied by the paths);
* mode & 0o777, uid/gid 1000, mtime 0, empty uname/gname;
* every path unique, none both a file and a directory of another file;
* the path fits ustar's prefix(155) "/" name(100) split, else it cannot be expressed at all;
* archive size a multiple of 512, at least 3 blocks, ending in two zero blocks, with the last
  payload ending at least 1024 bytes before the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from .errors import UserError
from .fsutil import Writable

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default blocking; also the size of LiteBox's built-in empty tar
NAME_MAX = 100
PREFIX_MAX = 155
OWNER_ID = 1000  # LiteBox runs the guest as uid/gid 1000
MAX_SIZE = 8**11 - 1  # largest value an 11-digit octal size field holds
_COPY_CHUNK = 1 << 20


class TarPathError(UserError):
    """A path that cannot be stored in a tar_ro-compatible archive. Names the path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{_show(path)}: {reason}")
        self.path = path
        self.reason = reason


def _show(path: str) -> str:
    # Surrogates (undecodable bytes) cannot be printed as is; escape them for the message.
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def tar_path(path: str) -> str:
    """The tar member name for an absolute or relative path: one leading "/" stripped.

    Rejects what tar_ro would read differently from what we meant: empty paths and empty,
    "." or ".." components (tar_ro drops empty components and would not resolve dots), NUL,
    names that are not valid UTF-8 (tar_ro skips them) and a trailing "/" (a directory).
    """
    name = path[1:] if path.startswith("/") else path
    if not name:
        raise TarPathError(path, "empty path")
    if "\0" in name:
        raise TarPathError(path, "path contains a NUL byte")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise TarPathError(path, "path is not valid UTF-8") from None
    if name.endswith("/"):
        raise TarPathError(path, "path ends with '/' (directories are implied, not stored)")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise TarPathError(path, f"path has a {part or 'empty'!r} component")
    return name


def split_ustar(name: str) -> tuple[bytes, bytes]:
    """Split a normalised member name into ustar (prefix, name) byte strings.

    The longest prefix that fits is used, so the same name always gives the same header.
    Raises TarPathError when no "/" gives a prefix ≤155 and a name ≤100 bytes.
    """
    raw = name.encode("utf-8")
    if len(raw) <= NAME_MAX:
        return b"", raw
    # A split at byte i puts raw[:i] in prefix and raw[i+1:] in name.
    for i in range(min(len(raw) - 1, PREFIX_MAX), 0, -1):
        if raw[i] == 0x2F and len(raw) - i - 1 <= NAME_MAX:
            return raw[:i], raw[i + 1 :]
    raise TarPathError(
        name,
        f"path is {len(raw)} bytes and cannot be split into a ustar prefix (≤{PREFIX_MAX}) "
        f"and name (≤{NAME_MAX}); tar_ro reads nothing else",
    )


def check_fits(path: str) -> str:
    """Normalise ``path`` with :func:`tar_path` and make sure ustar can hold it."""
    name = tar_path(path)
    split_ustar(name)
    return name


def _parents(name: str) -> Iterable[str]:
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def validate_paths(paths: Iterable[str]) -> list[str]:
    """Check a whole bundle's paths before anything is written; return the member names.

    Raises TarPathError for the first bad path (and says how many others are bad): one that does
    not fit, a duplicate, or a path that is both a file and a directory of another file (tar_ro
    would silently replace one with the other).
    """
    names: list[str] = []
    errors: list[TarPathError] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            name = check_fits(path)
        except TarPathError as e:
            errors.append(e)
            continue
        if name in seen:
            errors.append(TarPathError(path, f"duplicate tar path (also given as {seen[name]!r})"))
            continue
        seen[name] = path
        names.append(name)
    dirs: dict[str, str] = {}
    for name in names:
        for parent in _parents(name):
            dirs.setdefault(parent, name)
    for name in names:
        if name in dirs:
            errors.append(TarPathError(name, f"is a file and also the directory of {dirs[name]!r}"))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            raise TarPathError(
                first.path, f"{first.reason} (and {len(errors) - 1} more bad path(s))"
            )
        raise first
    return names


def _octal(value: int, width: int) -> bytes:
    # width-1 zero-padded digits and a NUL, as POSIX and GNU tar write them
    return b"%0*o\0" % (width - 1, value)


def ustar_header(name: str, size: int, mode: int) -> bytes:
    """One 512-byte ustar header for a regular file with tar_ro's owner, time and mode rules."""
    if not 0 <= size <= MAX_SIZE:
        raise UserError(f"{_show(name)}: {size} bytes is too large for a ustar entry")
    prefix, short = split_ustar(name)
    h = bytearray(BLOCK)
    h[0 : len(short)] = short
    h[100:108] = _octal(mode & 0o777, 8)
    h[108:116] = _octal(OWNER_ID, 8)
    h[116:124] = _octal(OWNER_ID, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(0, 12)
    h[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    h[156:157] = b"0"
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    # uname/gname (265..329) stay empty
    h[329:337] = _octal(0, 8)
    h[337:345] = _octal(0, 8)
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


class UstarWriter:
    """Write regular-file entries to ``fileobj`` as they come; nothing is buffered.

    Only the set of names is kept (for the duplicate and file/directory checks). ``fileobj``
    needs only ``write``, so pipes work; the caller opens and closes it.
    """

    def __init__(self, fileobj: Writable) -> None:
        self._f = fileobj
        self._files: set[str] = set()
        self._dirs: dict[str, str] = {}
        self._offset = 0
        self._closed = False

    @property
    def entries(self) -> int:
        return len(self._files)

    @property
    def offset(self) -> int:
        """Bytes written so far (the archive size after ``close``)."""
        return self._offset

    def _claim(self, path: str) -> str:
        if self._closed:
            raise ValueError("UstarWriter is closed")
        name = check_fits(path)
        if name in self._files:
            raise TarPathError(name, "duplicate tar path")
        if name in self._dirs:
            raise TarPathError(name, f"is a file and also the directory of {self._dirs[name]!r}")
        for parent in _parents(name):
            if parent in self._files:
                raise TarPathError(name, f"its directory {parent!r} is already a file")
        return name

    def _commit(self, name: str) -> None:
        self._files.add(name)
        for parent in _parents(name):
            self._dirs.setdefault(parent, name)

    def _write(self, data: bytes | memoryview) -> None:
        self._f.write(data)
        self._offset += len(data)

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self._write(bytes(BLOCK - size % BLOCK))

    def add(self, path: str, data: bytes, mode: int) -> str:
        """Append one regular file; returns its member name. Checks happen before any write."""
        name = self._claim(path)
        header = ustar_header(name, len(data), mode)
        self._commit(name)
        self._write(header)
        self._write(data)
        self._pad(len(data))
        return name

    def add_stream(self, path: str, src: BinaryIO, size: int, mode: int) -> str:
        """Append ``size`` bytes read from ``src`` in chunks (for large files not held in memory).

        Raises UserError if ``src`` ends early; the archive is then unusable and must be discarded.
        """
        name = self._claim(path)
        header = ustar_header(name, size, mode)
        self._commit(name)
        self._write(header)
        left = size
        while left:
            chunk = src.read(min(left, _COPY_CHUNK))
            if not chunk:
                raise UserError(f"{_show(name)}: source ended {left} bytes early")
            self._write(chunk)
            left -= len(chunk)
        self._pad(size)
        return name

    def close(self) -> None:
        """Write the end: two zero blocks, then zeros up to a whole 10 KiB record (like tar)."""
        if self._closed:
            return
        end = self._offset + 2 * BLOCK
        total = -(-end // RECORD) * RECORD
        self._write(bytes(total - self._offset))
        self._closed = True

    def __enter__(self) -> UstarWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        # On error the archive is abandoned (atomic_output discards it); do not dress it up.
        if exc_type is None:
            self.close()
