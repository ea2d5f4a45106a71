"""Plan → rewrite (parallel, cached) → stream a strict ustar tar, plus the main binary beside it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__
from .cache import cache_root
from .cache_limit import auto_prune
from .errors import UserError
from .fsutil import HashingReader, HeldSignals, atomic_output, check_output, work_dir
from .plan import MANIFEST_PATH, Plan, PlannedFile
from .pyc import OUTCOME as BYTECODE
from .pyc import REASON as BYTECODE_KEPT
from .pyc import bytecode_result
from .rewrite_job import (
    NOT_ELF,
    FileResult,
    Job,
    RewriteOptions,
    cached_result,
    die_with_parent,
    run_job,
)
from .sbom import SBOM_PATH, build_sbom
from .schemas import FORMAT
from .tarball import UstarWriter, tar_path, validate_paths

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
    classes: Counter[str] = field(default_factory=Counter)  # files per audit class
    sites: int = 0
    cached: int = 0
    policy: str = "fail"  # --unpatchable: what was done at the sites listed in ``unpatchable``
    unpatchable: list[tuple[str, list[int]]] = field(default_factory=list)  # (source, addresses)
    # source -> its data-in-code sites ({"address", "why"}), the sites left as they are
    data_in_code: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def unpatchable_sites(self) -> int:
        return sum(len(a) for _, a in self.unpatchable)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "hooked": self.hooked,
            "files": self.files,
            "entries": self.entries,
            "bytes": self.size,
            "seconds": round(self.seconds, 3),
            "outcomes": dict(sorted(self.outcomes.items())),
            "classes": dict(sorted(self.classes.items())),
            "sites": self.sites,
            "cached": self.cached,
            "unpatchable": {
                "policy": self.policy,
                "sites": self.unpatchable_sites,
                "files": [
                    {"source": src, "addresses": [f"{a:#x}" for a in addrs]}
                    for src, addrs in self.unpatchable
                ],
            },
            "data_in_code": [
                {"source": src, **site}
                for src, sites in self.data_in_code.items()
                for site in sites
            ],
        }


def audit_class(outcome: dict[str, Any]) -> str:
    """The class ``audit`` will give the bundled bytes (packager/audit.py), from the outcome."""
    what = outcome["outcome"]
    if what == BYTECODE or str(outcome.get("reason")).startswith(BYTECODE_KEPT):
        return "non-elf"  # a .pyc, rewritten header or not (packager/pyc.py)
    if what == "unchanged":
        return "non-elf" if outcome.get("reason") == NOT_ELF else "unpatched"
    if what == "checked-nothing-to-patch" or (what == "patched" and not outcome.get("sites")):
        # no stub: a marker, or (every site kept or trapped) a trampoline holding only the slot
        return "checked-nothing-to-patch"
    # An already-hooked input carries an earlier rewrite's trailer: counted with the patched.
    return "patched"


def rewrite_all(
    plan: Plan, options: RewriteOptions, jobs: int, use_cache: bool, spool: str
) -> Iterator[tuple[PlannedFile, FileResult]]:
    """Results in plan order, each as soon as it and all before it are ready.

    Cache hits and files that are not rewritten are served here; only the rest go to the
    worker processes (started on the first miss). At most ``2 * jobs`` results wait, and they
    wait as files, so memory stays flat however big the bundle is.
    """
    cache_dir = str(cache_root()) if use_cache else None
    pool: ProcessPoolExecutor | None = None
    finished = False
    pending: deque[tuple[PlannedFile, FileResult | Future[FileResult]]] = deque()

    def head_ready() -> bool:
        item = pending[0][1]
        return isinstance(item, FileResult) or item.done()

    def settle(item: FileResult | Future[FileResult]) -> FileResult:
        return item if isinstance(item, FileResult) else item.result()

    try:
        for f in plan.files:
            job = Job(f.source, f.rewrite, f.skip_reason)
            # Bytecode gets a header valid under tar_ro's mtime 0 (pyc.py), not the rewriter.
            ready: FileResult | Future[FileResult] | None = bytecode_result(
                job, spool
            ) or cached_result(job, options, cache_dir)
            if ready is None:
                if jobs <= 1:
                    ready = run_job(job, options, cache_dir, spool)
                else:
                    pool = pool or ProcessPoolExecutor(
                        max_workers=jobs, initializer=die_with_parent, initargs=(os.getpid(),)
                    )
                    ready = pool.submit(run_job, job, options, cache_dir, spool)
            pending.append((f, ready))
            while pending and (len(pending) > 2 * jobs or head_ready()):
                done, item = pending.popleft()
                yield done, settle(item)
        while pending:
            done, item = pending.popleft()
            yield done, settle(item)
        finished = True
    finally:
        for _, item in pending:
            if isinstance(item, Future):
                item.cancel()
        if pool is not None:
            # On an error or a signal, do not wait for rewrites nobody will use: the workers
            # finish their current file and exit, or die with this process (die_with_parent).
            pool.shutdown(wait=finished, cancel_futures=True)


def manifest_entry(f: PlannedFile, r: FileResult) -> dict[str, Any]:
    return _entry(
        f.paths, f.label or f.source, r.mode, r.sha256_in, r.sha256_out, r.outcome, f.reasons
    )


def _entry(
    paths: list[str],
    source: str | None,
    mode: int,
    sha_in: str,
    sha_out: str,
    o: dict[str, Any],
    reasons: list[dict[str, Any]],
) -> dict[str, Any]:
    trampoline = o.get("trampoline")
    return {
        "paths": paths,
        "source": source,
        "mode": mode,
        "sha256_in": sha_in,
        "sha256_out": sha_out,
        "outcome": o["outcome"],
        "reason": o.get("reason"),
        "sites": o.get("sites", 0),
        "strategies": o.get("strategies", {}),
        "trampoline_size": trampoline["size"] if trampoline else 0,
        "unpatchable": o.get("unpatchable", []),
        "data_in_code": o.get("data_in_code", []),
        "code_map": o.get("code_map"),
        "fork_patch": o.get("fork_patch"),
        "included_because": reasons,
    }


@contextlib.contextmanager
def _checked_source(r: FileResult) -> Iterator[BinaryIO]:
    """``r.output`` to stream from; afterwards, make sure the bytes were the ones hashed and
    recorded in the manifest: a file that changed since (an --include being written to, a
    swapped cache entry) fails the whole bundle before anything is renamed into place."""
    try:
        src = open(r.output, "rb")  # noqa: SIM115 (closed below, after the size check)
    except OSError as e:
        raise UserError(f"{r.source}: cannot read: {e.strerror or e}") from None
    with src:
        reader = HashingReader(src)
        yield reader  # type: ignore[misc]
        size = os.fstat(src.fileno()).st_size
    if reader.hexdigest() != r.sha256_out or size != r.size:
        raise UserError(
            f"{r.source}: changed while being packaged (its bytes no longer match the sha256 "
            "recorded for the manifest); nothing was written"
        )


def write_bundle(
    plan: Plan,
    output: Path,
    *,
    options: RewriteOptions,
    hooked: Path | None,
    jobs: int,
    use_cache: bool,
    extra: Sequence[tuple[str, bytes, int]] = (),
    progress: Progress | None = None,
    packages_root: str | None = None,
    subject: str = "",
) -> BundleSummary:
    """Write the tar and the main binary beside it, both atomically; return what was done.

    ``packages_root``: the tree whose package databases say which package provides each source
    (for the SBOM; None: none is read). ``subject`` names the bundle in the SBOM.
    """
    start = time.monotonic()
    validate_paths([*plan.tar_paths(), *(p for p, _, _ in extra), SBOM_PATH, MANIFEST_PATH])
    summary = BundleSummary(
        str(output), str(hooked) if hooked else None, policy=options.unpatchable
    )
    entries: list[dict[str, Any]] = []
    main: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        held = stack.enter_context(HeldSignals())  # entered first, so it is left last
        spool = stack.enter_context(work_dir(check_output(output), ".litebox-pack-", output))
        # Entered before the tar, so it is renamed into place after the tar is complete; an
        # error while streaming removes both temporary files.
        main_fh = stack.enter_context(atomic_output(hooked, 0o755)) if hooked else None
        tar = stack.enter_context(UstarWriter(stack.enter_context(atomic_output(output))))
        for f, r in rewrite_all(plan, options, jobs, use_cache, spool):
            for p in f.paths:
                with _checked_source(r) as src:
                    tar.add_stream(p, src, r.size, r.mode)
            if f is plan.main:
                main = {"path": tar_path(plan.main_path), "sha256": r.sha256_out}
                if main_fh is not None:
                    with _checked_source(r) as src:
                        shutil.copyfileobj(src, main_fh)
            if r.temporary:
                os.unlink(r.output)
            entries.append(manifest_entry(f, r))
            summary.outcomes[r.outcome["outcome"]] += 1
            summary.classes[audit_class(r.outcome)] += 1
            summary.sites += r.outcome.get("sites", 0)
            summary.cached += r.cached
            if r.outcome.get("unpatchable"):
                summary.unpatchable.append((f.source, list(r.outcome["unpatchable"])))
            if r.outcome.get("data_in_code"):
                summary.data_in_code[f.source] = r.outcome["data_in_code"]
            if progress:
                progress(f, r)
        for path, data, mode in extra:
            tar.add(path, data, mode)
            digest = hashlib.sha256(data).hexdigest()
            generated = {"outcome": "unchanged", "reason": "generated by litebox-pack"}
            entries.append(
                _entry([path], None, mode, digest, digest, generated, [{"kind": "generated"}])
            )
        # Like the manifest, the SBOM describes the files and is not one of them.
        sbom = build_sbom(subject or plan.main_path or "bundle", entries, packages_root)
        tar.add(SBOM_PATH, sbom, 0o644)
        manifest = {
            "tool": "litebox-pack",
            "version": __version__,
            "format": FORMAT["manifest"],
            "options": options.to_json(),
            "main": main,  # the binary written beside the tar; run --hooked checks its sha256
            "files": entries,
        }
        if plan.gaps:
            manifest["gaps"] = plan.gaps  # what tar_ro cannot hold (see Plan.gaps)
        # Sorted keys: an outcome read back from the cache must serialise like a fresh one.
        text = json.dumps(manifest, indent=1, sort_keys=True)
        tar.add(MANIFEST_PATH, text.encode() + b"\n", 0o644)
        summary.entries = tar.entries
        held.hold()  # from here on, the tar and the .hooked are renamed into place together
    if use_cache:
        auto_prune(cache_root())  # keep the cache under its cap (cache_limit.py)
    summary.files = len(plan.files)
    summary.size = tar.offset  # closed: the whole archive, also when it went to a stream
    summary.seconds = time.monotonic() - start
    return summary
