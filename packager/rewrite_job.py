"""Rewrite one file of a bundle: the unit of work that runs in parallel and is cached.

Results travel as files, not bytes: a rewritten file lands in the cache (or in a spool directory
when caching is off) and the tar writer streams it from there, so neither the workers' pipes nor
the main process ever hold a large library in memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewriter import Abi, RewriteError, RewriteResult, rewrite_elf

from .cache import RewriteCache, cache_key
from .errors import UserError

ELF_MAGIC = b"\x7fELF"
NOT_ELF = "not an ELF file"  # the reason the rewriter gives for a file it leaves as is


@dataclass(frozen=True)
class RewriteOptions:
    abi: Abi = Abi.REDZONE
    unpatchable: str = "fail"
    fork_patch: bool = True
    data_guard: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "abi": self.abi.value,
            "unpatchable": self.unpatchable,
            "fork_patch": self.fork_patch,
            "data_guard": self.data_guard,
        }


@dataclass(frozen=True)
class Job:
    source: str  # host path of the real file
    rewrite: bool = True
    skip_reason: str | None = None  # why it is not rewritten (e.g. "--no-rewrite")


@dataclass
class FileResult:
    source: str
    mode: int
    sha256_in: str
    sha256_out: str
    output: str  # a file holding the bytes to bundle (the source itself when unchanged)
    size: int
    outcome: dict[str, Any]  # RewriteResult.to_json() without the per-site list
    cached: bool = False
    temporary: bool = False  # ``output`` is a spool file the consumer deletes


def describe(result: RewriteResult) -> dict[str, Any]:
    """The outcome as the manifest, the cache and the summary record it."""
    doc = result.to_json()
    doc.pop("sites")
    doc["sites"] = doc.pop("sites_patched")
    return doc


def _stat_and_hash(source: str) -> tuple[int, int, str, bytes]:
    """(mode & 0o777, size, sha256, first 4 bytes), streaming; UserError when unreadable."""
    try:
        with open(source, "rb") as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(4)
            fh.seek(0)
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as e:
        raise UserError(f"{source}: cannot read: {e.strerror or e}") from None
    return st.st_mode & 0o777, st.st_size, digest, head


def cached_result(job: Job, options: RewriteOptions, cache_dir: str | None) -> FileResult | None:
    """The finished result when no rewriting is needed (cache hit, non-ELF, not rewritten)."""
    mode, size, sha_in, head = _stat_and_hash(job.source)
    if not job.rewrite or head != ELF_MAGIC:
        # The outcome the rewriter would give, without sending the file to a worker.
        reason = job.skip_reason if not job.rewrite else NOT_ELF
        outcome = {"outcome": "unchanged", "reason": reason, "sites": 0}
        return FileResult(job.source, mode, sha_in, sha_in, job.source, size, outcome)
    if cache_dir is None:
        return None
    hit = RewriteCache(Path(cache_dir)).get(cache_key(sha_in, options.to_json()))
    if hit is None:
        return None
    path, meta = hit
    out_size = os.path.getsize(path)
    return FileResult(
        job.source, mode, sha_in, meta["sha256_out"], str(path), out_size, meta["outcome"], True
    )


def run_job(job: Job, options: RewriteOptions, cache_dir: str | None, spool_dir: str) -> FileResult:
    """Rewrite one file into the cache (or the spool) and describe it. Raises UserError."""
    try:
        data = Path(job.source).read_bytes()
        mode = os.stat(job.source).st_mode & 0o777
    except OSError as e:
        raise UserError(f"{job.source}: cannot read: {e.strerror or e}") from None
    sha_in = hashlib.sha256(data).hexdigest()
    try:
        result = rewrite_elf(
            data,
            abi=options.abi,
            unpatchable=options.unpatchable,  # type: ignore[arg-type]
            fork_patch=options.fork_patch,
            data_guard=options.data_guard,
        )
    except RewriteError as e:
        raise UserError(f"{job.source}: {e}") from None
    del data
    outcome = describe(result)
    sha_out = hashlib.sha256(result.data).hexdigest()
    size = len(result.data)
    if cache_dir is not None:
        key = cache_key(sha_in, options.to_json())
        stored = RewriteCache(Path(cache_dir)).put(
            key, result.data, {"sha256_out": sha_out, "outcome": outcome}
        )
        if stored is not None:
            return FileResult(job.source, mode, sha_in, sha_out, str(stored), size, outcome)
    fd, spool = tempfile.mkstemp(dir=spool_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(result.data)
    return FileResult(job.source, mode, sha_in, sha_out, spool, size, outcome, temporary=True)
