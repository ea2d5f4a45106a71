"""Python bytecode that stays valid in a tar_ro bundle: PEP 552 unchecked-hash ``.pyc`` headers.

LiteBox's tar file system reports mtime 0 for every file: tar_ro.rs (microsoft/litebox at
01798b0c, the version read) builds its FileStatus from mode, size, owner and node only, the
shim's stat conversion leaves every time field at its default 0, and our tars say 0 anyway.
So a timestamp-based ``.pyc`` (header: magic, flags 0, source mtime,
source size) never matches its source there: Python recompiles every module at start-up and
tries to write ``__pycache__``, which LiteBox refuses or panics on. A PEP 552 hash-based
``.pyc`` with ``check_source`` off is loaded without looking at the source at all. We rewrite
only the 16-byte header (flags 1, the source's hash as Python would compute it) and keep the
code object byte for byte; that is exactly what ``py_compile`` writes in UNCHECKED_HASH mode.

A header is only rewritten when it is still valid for the source on the host (same mtime and
size, or same hash), so stale bytecode is never frozen into the bundle. Anything unexpected
(no source beside it, an unknown magic or flags, a short file) is left unchanged, and the
manifest says why.
"""

from __future__ import annotations

import _imp
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass

from .rewrite_job import FileResult, Job

HEADER = 16
FIRST_PEP552_MAGIC = 3392  # CPython 3.7: the first magic whose header has the flags word
FLAG_HASH, FLAG_CHECK_SOURCE = 1, 2
OUTCOME = "bytecode-unchecked"
REASON = "bytecode: "  # starts the reason of every .pyc left unchanged


@dataclass(frozen=True)
class Conversion:
    data: bytes | None  # the new file, or None when it stays as it is
    reason: str  # what was done, or why nothing was


def source_of(path: str) -> str | None:
    """The ``.py`` a ``DIR/__pycache__/NAME.TAG[.opt-N].pyc`` was compiled from (PEP 3147), or
    None when ``path`` is not at such a place (legacy sourceless ``.pyc`` files are loaded
    without any freshness check, so they need nothing)."""
    cache_dir, name = os.path.split(path)
    if os.path.basename(cache_dir) != "__pycache__":
        return None
    parts = name.split(".")
    if parts[-1] != "pyc" or len(parts) not in (3, 4) or not all(parts):
        return None
    if len(parts) == 4 and not parts[2].startswith("opt-"):
        return None
    return os.path.join(os.path.dirname(cache_dir), parts[0] + ".py")


def source_hash(magic: bytes, source: bytes) -> bytes:
    """The 8-byte source hash Python of this ``magic`` puts in a hash-based header (its key
    is the magic number, as importlib.util.source_hash uses)."""
    return _imp.source_hash(int.from_bytes(magic, "little"), source)


def make_unchecked(pyc: bytes, source_path: str) -> Conversion:
    """Turn a valid ``.pyc`` into an unchecked-hash one, or say why it is left alone."""
    if len(pyc) < HEADER:
        return Conversion(None, REASON + "shorter than a .pyc header")
    magic = pyc[:4]
    if magic[2:] != b"\r\n" or int.from_bytes(magic[:2], "little") < FIRST_PEP552_MAGIC:
        return Conversion(None, REASON + "not a Python 3.7+ .pyc magic number")
    (flags,) = struct.unpack_from("<I", pyc, 4)
    if flags == FLAG_HASH:
        return Conversion(None, REASON + "already unchecked-hash")
    try:
        with open(source_path, "rb") as fh:
            st = os.fstat(fh.fileno())
            source = fh.read()
    except OSError as e:
        return Conversion(None, REASON + f"source {source_path}: {e.strerror or e}")
    digest = source_hash(magic, source)
    if flags == 0:
        mtime, size = struct.unpack_from("<II", pyc, 8)
        if (mtime, size) != (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF):
            return Conversion(None, REASON + f"stale for {source_path} (mtime or size differ)")
    elif flags == FLAG_HASH | FLAG_CHECK_SOURCE:
        if pyc[8:16] != digest:
            return Conversion(None, REASON + f"stale for {source_path} (hash differs)")
    else:
        return Conversion(None, REASON + f"unknown header flags {flags:#x}")
    header = magic + struct.pack("<I", FLAG_HASH) + digest
    return Conversion(header + pyc[HEADER:], "PEP 552 unchecked-hash header")


def bytecode_result(job: Job, spool_dir: str) -> FileResult | None:
    """The bundled form of a ``__pycache__`` ``.pyc`` (None for any other file)."""
    src = source_of(job.source)
    if src is None or not job.rewrite:
        return None
    try:
        with open(job.source, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode & 0o777
            data = fh.read()
    except OSError:
        return None  # the generic path reports the read error with its usual wording
    sha_in = hashlib.sha256(data).hexdigest()
    done = make_unchecked(data, src)
    if done.data is None:
        outcome = {"outcome": "unchanged", "reason": done.reason, "sites": 0}
        return FileResult(job.source, mode, sha_in, sha_in, job.source, len(data), outcome)
    fd, spool = tempfile.mkstemp(dir=spool_dir, suffix=".pyc")
    with os.fdopen(fd, "wb") as out:
        out.write(done.data)
    outcome = {"outcome": OUTCOME, "reason": done.reason, "sites": 0}
    sha_out = hashlib.sha256(done.data).hexdigest()
    return FileResult(
        job.source, mode, sha_in, sha_out, spool, len(done.data), outcome, temporary=True
    )
