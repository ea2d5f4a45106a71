"""Rewrite one file of a bundle: the unit of work that runs in parallel and is cached."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewriter import Abi, RewriteError, RewriteResult, rewrite_elf

from .cache import RewriteCache, cache_key
from .errors import UserError


@dataclass(frozen=True)
class RewriteOptions:
    abi: Abi = Abi.REDZONE
    unpatchable: str = "fail"
    fork_patch: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "abi": self.abi.value,
            "unpatchable": self.unpatchable,
            "fork_patch": self.fork_patch,
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
    data: bytes = field(repr=False)
    outcome: dict[str, Any]  # RewriteResult.to_json() without the per-site list
    cached: bool = False


def describe(result: RewriteResult) -> dict[str, Any]:
    """The outcome as the manifest, the cache and the summary record it."""
    doc = result.to_json()
    doc.pop("sites")
    doc["sites"] = doc.pop("sites_patched")
    return doc


def read_source(job: Job) -> tuple[bytes, int, str]:
    """(bytes, mode & 0o777, sha256) of a job's file; UserError when it cannot be read."""
    try:
        data = Path(job.source).read_bytes()
        mode = os.stat(job.source).st_mode & 0o777
    except OSError as e:
        raise UserError(f"{job.source}: cannot read: {e.strerror or e}") from None
    return data, mode, hashlib.sha256(data).hexdigest()


def cached_result(job: Job, options: RewriteOptions, cache_dir: str | None) -> FileResult | None:
    """The finished result when no rewriting is needed (cache hit, or not rewritten at all)."""
    data, mode, sha_in = read_source(job)
    if not job.rewrite or not data.startswith(b"\x7fELF"):
        # Same outcome the rewriter gives, without sending the bytes to a worker.
        reason = job.skip_reason if not job.rewrite else "not an ELF file"
        outcome = {"outcome": "unchanged", "reason": reason, "sites": 0}
        return FileResult(job.source, mode, sha_in, sha_in, data, outcome)
    if cache_dir is None:
        return None
    hit = RewriteCache(Path(cache_dir)).get(cache_key(sha_in, options.to_json()))
    if hit is None:
        return None
    out, meta = hit
    return FileResult(job.source, mode, sha_in, meta["sha256_out"], out, meta["outcome"], True)


def run_job(job: Job, options: RewriteOptions, cache_dir: str | None) -> FileResult:
    """Read, rewrite and describe one file, filling the cache. Raises UserError."""
    data, mode, sha_in = read_source(job)
    try:
        result = rewrite_elf(
            data,
            abi=options.abi,
            unpatchable=options.unpatchable,  # type: ignore[arg-type]
            fork_patch=options.fork_patch,
        )
    except RewriteError as e:
        raise UserError(f"{job.source}: {e}") from None
    outcome = describe(result)
    sha_out = hashlib.sha256(result.data).hexdigest()
    if cache_dir is not None:
        key = cache_key(sha_in, options.to_json())
        RewriteCache(Path(cache_dir)).put(
            key, result.data, {"sha256_out": sha_out, "outcome": outcome}
        )
    return FileResult(job.source, mode, sha_in, sha_out, result.data, outcome)
