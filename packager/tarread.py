"""The one way litebox-pack reads tars it did not write (audit, run, image archives, layers).

``tarfile`` trusts its input: a PAX header is read whole into memory and parsed with regular
expressions that backtrack quadratically on crafted records (CVE-2024-6232, unpatched in the
Python 3.11 this project runs on; a 302-byte gzip of a 150 KB header took 50 s), a GNU long
name of any size is held in memory, and damaged input surfaces as ValueError, OverflowError,
EOFError, zlib/lzma errors or OSError. Here PAX and GNU long-name records are bounded and
checked record by record (linear time) *before* tarfile parses them, whatever the interpreter's
patch level, and every failure becomes one UserError line.
"""

from __future__ import annotations

import contextlib
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from .errors import UserError
from .fsutil import DISK_ERRNOS
from .limits import MAX_PAX


class _Replay:
    """``raw`` with ``head`` put back in front (tarfile re-reads what the check consumed)."""

    def __init__(self, head: bytes, raw: Any) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            out, self.head = self.head + bytes(self.raw.read()), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        if len(out) < n:
            out += bytes(self.raw.read(n - len(out)))
        return out

    def tell(self) -> int:
        return int(self.raw.tell()) - len(self.head)

    def seek(self, pos: int, whence: int = 0) -> int:
        self.head = b""
        return int(self.raw.seek(pos, whence))


def check_pax_records(buf: bytes) -> None:
    """Each record is ``LEN KEY=VALUE\\n`` with LEN counting the whole record; anything else
    is refused here, in one linear pass."""
    pos = 0
    while pos < len(buf) and buf[pos] != 0:
        space = buf.find(b" ", pos, pos + 21)
        digits = buf[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise tarfile.HeaderError(f"malformed PAX record at byte {pos}")
        length = int(digits)
        end = pos + length
        record = buf[space + 1 : end]
        if length <= len(digits) + 1 or end > len(buf) or not record.endswith(b"\n"):
            raise tarfile.HeaderError(f"malformed PAX record at byte {pos}")
        if b"=" not in record or record.startswith(b"="):
            raise tarfile.HeaderError(f"PAX record without a key at byte {pos}")
        pos = end


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo whose extended records are bounded and checked before tarfile parses them."""

    def _bounded(self, what: str) -> None:
        if self.size > MAX_PAX:
            raise tarfile.HeaderError(
                f"{what} of {self.size} bytes (limit {MAX_PAX}; LITEBOX_PACK_MAX_PAX)"
            )

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded("PAX header")
        raw = tarfile.fileobj
        buf = raw.read(self._block(self.size))  # type: ignore[union-attr,attr-defined]
        check_pax_records(buf[: self.size])
        tarfile.fileobj = _Replay(buf, raw)  # type: ignore[assignment]
        try:
            return super()._proc_pax(tarfile)  # type: ignore[misc,no-any-return]
        finally:
            tarfile.fileobj = raw

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._bounded("GNU long-name record")
        return super()._proc_gnulong(tarfile)  # type: ignore[misc,no-any-return]


def open_tar(fileobj: IO[bytes], mode: str) -> tarfile.TarFile:
    """``tarfile.open`` with bounded extended headers (use inside :func:`tar_errors`)."""
    return tarfile.open(fileobj=fileobj, mode=mode, tarinfo=BoundedTarInfo)  # type: ignore[call-overload,no-any-return]


# What damaged or hostile archives raise from tarfile and the decompressors under it.
DAMAGE: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,  # truncated gzip/bz2/xz stream
    zlib.error,
    lzma.LZMAError,
    ValueError,  # GNU sparse maps, NUL in names, bad numbers
    OverflowError,  # base-256 sizes and offsets
)


@contextlib.contextmanager
def tar_errors(what: str, extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Every way reading ``what`` can fail, as one UserError line."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise UserError(f"{what}: cannot write what it holds: {e.strerror}") from None
        if e.errno is not None and e.filename is not None:
            raise UserError(f"{what}: {e.filename}: {e.strerror}") from None
        raise UserError(f"{what}: corrupt or truncated archive ({_first(e)})") from None
    except (*DAMAGE, *extra) as e:
        raise UserError(f"{what}: corrupt or truncated archive ({_first(e)})") from None


def _first(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text[:200] or type(e).__name__
