"""The bundle plan: each unique real file, the tar paths it must appear at, and why it is there.

LiteBox's tar filesystem has no symlinks, so a file the loader may ask for under several names
(the path the walker resolved, the PT_INTERP path, the input's absolute path) is stored once per
name, with the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError, UserError
from .resolve import Closure, Library, confined_realpath
from .sbom import SBOM_PATH
from .tarball import tar_path

MANIFEST_PATH = "litebox/manifest.json"


@dataclass
class PlannedFile:
    source: str  # host path of the real file, read once
    paths: list[str] = field(default_factory=list)  # tar paths, without the leading "/"
    reasons: list[dict[str, Any]] = field(default_factory=list)
    rewrite: bool = True
    skip_reason: str | None = None
    # What the manifest names as the source instead of ``source``: a HOST:GUEST input's HOST as
    # given, so the same program packed from two directories gives the same bundle.
    label: str | None = None

    def add(self, path: str, reason: dict[str, Any]) -> None:
        p = tar_path(path)
        if p not in self.paths:
            self.paths.append(p)
        if reason not in self.reasons:
            self.reasons.append(reason)


@dataclass
class Plan:
    files: list[PlannedFile] = field(default_factory=list)
    main: PlannedFile | None = None  # the first input: written beside the tar as NAME.hooked
    main_path: str = ""  # the first input's path in the bundle ("/..."), for the runner
    input_paths: list[str] = field(default_factory=list)  # each input's path in the bundle
    _by_source: dict[str, PlannedFile] = field(default_factory=dict, repr=False)

    def file_for(self, source: str) -> PlannedFile:
        f = self._by_source.get(source)
        if f is None:
            f = self._by_source[source] = PlannedFile(source)
            self.files.append(f)
        return f

    def tar_paths(self) -> list[str]:
        return [p for f in self.files for p in f.paths]


def litebox_lookup_path(path: str) -> str:
    """The path LiteBox looks up when the loader asks for ``path``.

    LiteBox resolves every path lexically before the lookup: empty and "." components dropped,
    ".." removing the component before it, and nothing above the root (litebox/src/fs/
    resolver.rs, ``Context::resolve``; tar_ro's ``absolute_path`` before it). A tar holds no
    symlinks that ".." could cross, so a library found through ``$ORIGIN/../lib`` is stored at
    ``.../lib/NAME``, where LiteBox will look.
    """
    out: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if out:
                out.pop()
        elif part not in ("", "."):
            out.append(part)
    return ("/" if path.startswith("/") else "") + "/".join(out)


def _reason(lib: Library, moved: dict[str, str]) -> dict[str, Any]:
    if lib.rule == "input":
        return {"kind": "input"}
    by = moved.get(lib.needed_by or "", lib.needed_by)
    return {"kind": "needed", "by": by, "name": lib.name, "rule": lib.rule}


def parse_input(arg: str) -> tuple[str, str | None]:
    """An input: ``HOST`` or ``HOST:GUEST`` (an existing file of the whole name is a HOST)."""
    host, sep, guest = arg.partition(":")
    if not sep or os.path.lexists(arg):
        return arg, None
    if not host or not guest.startswith("/") or not guest.strip("/"):
        raise UsageError(f"{arg!r}: expected HOST_PATH or HOST_PATH:/GUEST_PATH")
    return host, guest


def parse_include(spec: str) -> tuple[str, str]:
    """``HOST:TAR`` split at the first colon (a host path cannot contain one; a tar path can)."""
    host, sep, target = spec.partition(":")
    if not sep or not host or not target.strip("/"):
        raise UsageError(f"--include {spec!r}: expected HOST_PATH:TAR_PATH")
    return host, target


def build_plan(
    closure: Closure,
    *,
    host_root: str | None,
    includes: list[str],
    no_rewrite: list[str],
    guest_paths: Sequence[str | None] = (),
) -> Plan:
    """Turn a resolved closure plus ``--include`` specs into a plan (no file contents read).

    ``guest_paths`` gives, per input, the path it takes in the bundle (``HOST:GUEST`` inputs)
    instead of its own absolute path.
    """
    plan = Plan()
    skip = {c for p in no_rewrite for c in _canonical(p, host_root)}
    moved: dict[str, str] = {}  # input path -> its GUEST path, for the "needed by" reasons
    for n, lib in enumerate([*closure.inputs, *closure.libraries]):
        f = plan.file_for(lib.realpath)
        own = (guest_paths[n] if n < len(guest_paths) else None) or lib.path
        for path in (own, *lib.aliases):
            f.add(litebox_lookup_path(path), _reason(lib, moved))
        if n < len(closure.inputs):
            plan.input_paths.append("/" + own.lstrip("/"))
            if own != lib.path:
                f.label, moved[lib.path] = lib.name, own
        if plan.main is None:
            plan.main, plan.main_path = f, "/" + own.lstrip("/")
    for spec in includes:
        host, target = parse_include(spec)
        base = Path(host)
        if not base.exists():
            raise UserError(f"--include {spec}: {host}: no such file or directory")
        for src, dest in _walk_include(base, target):
            plan.file_for(os.path.realpath(src)).add(dest, {"kind": "include", "spec": spec})
    for f in plan.files:
        if f.source in skip:
            f.rewrite, f.skip_reason = False, "--no-rewrite"
    _refuse_duplicates(plan)
    return plan


def _walk_include(base: Path, target: str) -> list[tuple[str, str]]:
    """Files of an include: the file itself, or every regular file below a directory (sorted,
    symlinks followed: the tar filesystem has none)."""
    if not base.is_dir():
        return [(str(base), target)]
    out = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, base)
        for name in sorted(filenames):
            src = os.path.join(dirpath, name)
            if os.path.isfile(src):
                out.append((src, os.path.normpath(os.path.join(target, rel, name))))
    return out


def _canonical(path: str, root: str | None) -> set[str]:
    """Real paths ``--no-rewrite PATH`` may name: the host file, and under ``--root`` also the
    file PATH names inside the root (symlinks resolved there, never escaping it)."""
    out = {os.path.realpath(path)}
    if root is not None:
        out.add(confined_realpath(os.path.realpath(root), os.path.abspath(path)))
    return out


def _refuse_duplicates(plan: Plan) -> None:
    owner: dict[str, str] = {MANIFEST_PATH: "litebox-pack's manifest", SBOM_PATH: "its SBOM"}
    for f in plan.files:
        for p in f.paths:
            other = owner.setdefault(p, f.source)
            if other != f.source:
                raise UserError(f"duplicate tar path {p!r}: both {other} and {f.source} claim it")
