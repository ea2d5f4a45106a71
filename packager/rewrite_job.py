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


def run_job(job: Job, options: RewriteOptions, cache_dir: str | None) -> FileResult:
    """Read, rewrite (or fetch from the cache) and describe one file. Raises UserError."""
    try:
        data = Path(job.source).read_bytes()
        mode = os.stat(job.source).st_mode & 0o777
    except OSError as e:
        raise UserError(f"{job.source}: cannot read: {e.strerror or e}") from None
    sha_in = hashlib.sha256(data).hexdigest()
    if not job.rewrite:
        outcome = {"outcome": "unchanged", "reason": job.skip_reason, "sites": 0}
        return FileResult(job.source, mode, sha_in, sha_in, data, outcome)

    cache = RewriteCache(Path(cache_dir)) if cache_dir is not None else None
    key = cache_key(sha_in, options.to_json())
    if cache is not None and (hit := cache.get(key)) is not None:
        out, meta = hit
        return FileResult(job.source, mode, sha_in, meta["sha256_out"], out, meta["outcome"], True)
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
    if cache is not None:
        cache.put(key, result.data, {"sha256_out": sha_out, "outcome": outcome})
    return FileResult(job.source, mode, sha_in, sha_out, result.data, outcome)
