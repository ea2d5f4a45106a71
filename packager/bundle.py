"""Plan → rewrite (parallel, cached) → stream a strict ustar tar, plus the main binary beside it."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .cache import cache_root
from .fsutil import atomic_output, write_atomic
from .plan import MANIFEST_PATH, Plan, PlannedFile
from .rewrite_job import FileResult, Job, RewriteOptions, run_job
from .tarball import UstarWriter, validate_paths

Progress = Callable[[PlannedFile, FileResult], None]


@dataclass
class BundleSummary:
    output: str
    hooked: str | None
    files: int = 0
    entries: int = 0
    size: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    sites: int = 0
    cached: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "hooked": self.hooked,
            "files": self.files,
            "entries": self.entries,
            "bytes": self.size,
            "seconds": round(self.seconds, 3),
            "outcomes": dict(sorted(self.outcomes.items())),
            "sites": self.sites,
            "cached": self.cached,
        }


def rewrite_all(
    plan: Plan, options: RewriteOptions, jobs: int, use_cache: bool
) -> Iterator[tuple[PlannedFile, FileResult]]:
    """Results in plan order, each as soon as it and all before it are ready.

    At most ``2 * jobs`` results are in flight, so memory stays flat however big the bundle is.
    """
    cache_dir = str(cache_root()) if use_cache else None
    work = [(f, Job(f.source, f.rewrite, f.skip_reason)) for f in plan.files]
    if jobs <= 1 or len(work) <= 1:
        for f, job in work:
            yield f, run_job(job, options, cache_dir)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: deque[tuple[PlannedFile, Future[FileResult]]] = deque()
        queue = iter(work)
        try:
            for f, job in queue:
                pending.append((f, pool.submit(run_job, job, options, cache_dir)))
                if len(pending) >= 2 * jobs:
                    done, fut = pending.popleft()
                    yield done, fut.result()
            while pending:
                done, fut = pending.popleft()
                yield done, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def manifest_entry(f: PlannedFile, r: FileResult) -> dict[str, Any]:
    o = r.outcome
    trampoline = o.get("trampoline")
    return {
        "paths": f.paths,
        "source": f.source,
        "mode": r.mode,
        "sha256_in": r.sha256_in,
        "sha256_out": r.sha256_out,
        "outcome": o["outcome"],
        "reason": o.get("reason"),
        "sites": o.get("sites", 0),
        "strategies": o.get("strategies", {}),
        "trampoline_size": trampoline["size"] if trampoline else 0,
        "unpatchable": o.get("unpatchable", []),
        "fork_patch": o.get("fork_patch"),
        "included_because": f.reasons,
    }


def write_bundle(
    plan: Plan,
    output: Path,
    *,
    options: RewriteOptions,
    hooked: Path | None,
    jobs: int,
    use_cache: bool,
    extra: list[tuple[str, bytes, int]] = (),  # type: ignore[assignment]
    progress: Progress | None = None,
) -> BundleSummary:
    """Write the tar (atomically) and the main binary beside it; return what was done."""
    start = time.monotonic()
    validate_paths([*plan.tar_paths(), *(p for p, _, _ in extra), MANIFEST_PATH])
    summary = BundleSummary(str(output), str(hooked) if hooked else None)
    entries: list[dict[str, Any]] = []
    main_bytes: bytes | None = None
    with atomic_output(output) as fh, UstarWriter(fh) as tar:
        for f, r in rewrite_all(plan, options, jobs, use_cache):
            for p in f.paths:
                tar.add(p, r.data, r.mode)
            if f is plan.main:
                main_bytes = r.data
            entries.append(manifest_entry(f, r))
            summary.outcomes[r.outcome["outcome"]] += 1
            summary.sites += r.outcome.get("sites", 0)
            summary.cached += r.cached
            if progress:
                progress(f, r)
        for path, data, mode in extra:
            tar.add(path, data, mode)
        manifest = {
            "tool": "litebox-pack",
            "version": __version__,
            "format": 1,
            "options": options.to_json(),
            "files": entries,
        }
        # Sorted keys: an outcome read back from the cache must serialise like a fresh one.
        text = json.dumps(manifest, indent=1, sort_keys=True)
        tar.add(MANIFEST_PATH, text.encode() + b"\n", 0o644)
        summary.entries = tar.entries
        if hooked is not None and main_bytes is not None:
            # Written before the tar is renamed into place: a failure leaves neither behind.
            write_atomic(hooked, main_bytes, 0o755)
    summary.files = len(plan.files)
    summary.size = os.path.getsize(output)
    summary.seconds = time.monotonic() - start
    return summary
