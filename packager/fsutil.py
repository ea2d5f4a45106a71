"""Reading inputs and writing outputs so that a failure is one line and never a half-written file.

Inputs must be regular files: a FIFO, a device or a socket would hang (``run`` on a FIFO) or never
end (``rewrite /dev/zero``), so every command opens its inputs with :func:`open_input`.

Outputs (``-o``, ``--report``, ``.hooked``) go through :func:`atomic_output`:

* a new path or an existing regular file is written to a temporary name beside it and renamed
  into place only when complete (a symlink to a regular file is followed: its target is replaced,
  the link stays);
* ``-`` is standard output, and a character device, FIFO or socket at the path (``/dev/null``,
  ``>(wc -c)``), or anything under ``/dev`` or ``/proc`` (``/dev/stdout``), is written in place
  as a stream, never replaced. A stream cannot be taken back: on error it holds what was
  written so far, and the error says so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

from .errors import UserError

STDOUT = "-"
# A write failing for one of these is the destination's fault (full, read-only, broken), never
# the one file's: the whole operation fails.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


# --- inputs ----------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def require_regular(path: str | os.PathLike[str], what: str = "") -> os.stat_result:
    """stat ``path`` and refuse anything but a regular file (one line naming it and why)."""
    shown = f"{what} {path}" if what else str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{shown}: no such file") from None
    except OSError as e:
        raise UserError(f"{shown}: cannot read: {_reason(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{shown}: is {_kind(st.st_mode)}, not a regular file")
    return st


def open_input(path: str | os.PathLike[str], what: str = "") -> io.BufferedReader:
    """Open a regular file for reading. O_NONBLOCK: a FIFO swapped in after the check cannot
    block the open, and fstat then refuses it."""
    require_regular(path, what)
    shown = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"{shown}: cannot read: {_reason(e)}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{shown}: is {_kind(st.st_mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_input(path: str | os.PathLike[str], what: str = "", limit: int | None = None) -> bytes:
    """Read a whole regular file (at most ``limit`` bytes), every failure one UserError line."""
    shown = f"{what} {path}" if what else str(path)
    with open_input(path, what) as f:
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as e:
            raise UserError(f"{shown}: cannot read: {_reason(e)}") from None
    if limit is not None and len(data) > limit:
        raise UserError(f"{shown}: larger than the {limit}-byte limit")
    return data


class HashingReader:
    """A read-only stream that hashes (sha256) what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTarget:
    shown: str  # the path as the user gave it, for messages
    path: str  # where the bytes go: the file to replace, or the stream to open
    stream: bool  # written in place (stdout, device, FIFO, socket), not renamed over
    directory: str  # where temporary files may go

    @property
    def stdout(self) -> bool:
        return self.path == STDOUT


def output_target(path: str | os.PathLike[str]) -> OutputTarget:
    """Decide how ``path`` is written, refusing what cannot be (a directory, a missing parent).

    Called before any work, so a bad ``-o`` fails fast."""
    shown = os.fspath(path)
    if shown == STDOUT:
        return OutputTarget(shown, STDOUT, True, tempfile.gettempdir())
    absolute = os.path.abspath(shown)
    try:
        st: os.stat_result | None = os.stat(shown)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UserError(f"{shown}: cannot write: {_reason(e)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{shown}: output path is a directory")
    special = absolute.startswith(("/dev/", "/proc/"))
    if st is not None and (not stat.S_ISREG(st.st_mode) or special):
        return OutputTarget(shown, shown, True, tempfile.gettempdir())
    if special:
        raise UserError(f"{shown}: cannot create a file under /dev or /proc")
    # A symlink (chain) to a regular file, or to a new path: the target is what gets replaced.
    real = os.path.realpath(shown)
    parent = os.path.dirname(real)
    if os.path.islink(shown) and st is None:
        raise UserError(f"{shown}: is a dangling symlink (to {os.readlink(shown)})")
    if not os.path.isdir(parent):
        raise UserError(f"{shown}: output directory {os.path.dirname(absolute)} does not exist")
    return OutputTarget(shown, real, False, parent)


def check_output(path: str | os.PathLike[str]) -> Path:
    """Refuse an unwritable output path early; return the directory for temporary files."""
    return Path(output_target(path).directory)


class OutputStream:
    """A write-only file whose OSErrors become one-line UserErrors naming the output."""

    def __init__(self, f: BinaryIO, target: OutputTarget) -> None:
        self._f = f
        self._target = target

    def _fail(self, e: OSError) -> UserError:
        partial = " (the stream holds a partial output)" if self._target.stream else ""
        return UserError(f"{self._target.shown}: cannot write: {_reason(e)}{partial}")

    def write(self, data: bytes | memoryview, /) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            raise self._fail(e) from None

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            raise self._fail(e) from None

    def fileno(self) -> int:
        return self._f.fileno()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[OutputStream]:
    """Write ``path`` (see the module docstring); a regular file appears only if the block
    succeeds, whole."""
    target = output_target(path)
    if target.stream:
        with _stream(target) as out:
            yield out
            out.flush()
        return
    name = os.path.basename(target.path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=target.directory)
    except OSError as e:
        raise UserError(f"{target.shown}: cannot write: {_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            out = OutputStream(f, target)
            yield out
            out.flush()
            try:
                os.fchmod(f.fileno(), mode)
                os.replace(tmp, target.path)
            except OSError as e:
                raise out._fail(e) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _stream(target: OutputTarget) -> Iterator[OutputStream]:
    if target.stdout:
        yield OutputStream(sys.stdout.buffer, target)
        return
    try:
        # No O_CREAT: the device/FIFO/socket is there already; never make a file in its place.
        fd = os.open(target.path, os.O_WRONLY | os.O_CLOEXEC | _trunc(target.path))
    except OSError as e:
        raise UserError(f"{target.shown}: cannot write: {_reason(e)}") from None
    with os.fdopen(fd, "wb") as f:
        yield OutputStream(f, target)


def _trunc(path: str) -> int:
    # A regular file reached through /dev/stdout or /proc/self/fd is overwritten, like a shell
    # redirection; O_TRUNC means nothing to devices and FIFOs.
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.stat(path).st_mode):
            return os.O_TRUNC
    return 0


class HeldSignals:
    """A context in which SIGINT and SIGTERM, from :meth:`hold` on, wait for the block's end.

    Several outputs renamed into place one after the other (the tar, then the ``.hooked``)
    then appear together: a signal between two renames would leave a new tar beside an old or
    missing ``.hooked``. The held signal is delivered, to the handler held back, on exit."""

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._caught: list[int] = []

    def __enter__(self) -> HeldSignals:
        return self

    def hold(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers, and only it runs them
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._catch)

    def _catch(self, signum: int, frame: object) -> None:
        self._caught.append(signum)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()
        if self._caught:
            signal.raise_signal(self._caught[0])


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    with atomic_output(path, mode) as f:
        f.write(data)


@contextlib.contextmanager
def work_dir(where: str | os.PathLike[str], prefix: str, shown: object) -> Iterator[str]:
    """A private temporary directory in ``where`` (removed afterwards) for writing ``shown``;
    one line on failure."""
    try:
        tmp = tempfile.TemporaryDirectory(prefix=prefix, dir=where)
    except OSError as e:
        raise UserError(f"{shown}: cannot create a temporary directory: {_reason(e)}") from None
    with tmp as name:
        yield name
