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

from rewriter.elf import EM_386, EM_X86_64, ET_DYN, ET_EXEC

from .errors import UsageError, UserError
from .fsutil import require_regular
from .resolve import Closure, Library, confined_realpath, resolve
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
    # Each input's path in the bundle, then each included program's (those of ``closure``).
    input_paths: list[str] = field(default_factory=list)
    # Inputs and included programs/libraries with everything they load, at their bundle paths:
    # what the self-check must find inside the bundle.
    closure: Closure = field(default_factory=lambda: Closure([], [], []))
    # What tar_ro cannot hold (empty directories): reported as warnings and in the manifest.
    gaps: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
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
    """``HOST:TAR`` split at the first colon (a host path cannot contain one; a tar path can);
    a lone ``PATH`` goes to the same (absolute) path in the bundle."""
    host, sep, target = spec.partition(":")
    if not sep:
        target = os.path.abspath(host)
    if not host or not target.strip("/"):
        raise UsageError(f"--include {spec!r}: expected PATH or HOST_PATH:TAR_PATH")
    return host, target


def build_plan(
    closure: Closure,
    *,
    host_root: str | None,
    includes: list[str],
    no_rewrite: list[str],
    guest_paths: Sequence[str | None] = (),
    include_reasons: dict[str, dict[str, Any]] | None = None,
    include_closures: bool = False,
    real_paths: bool = False,
    library_path: Sequence[str] = (),
) -> Plan:
    """Turn a resolved closure plus ``--include`` specs into a plan (no file contents read
    beyond the ELF and ``#!`` headers of included files).

    ``guest_paths`` gives, per input, the path it takes in the bundle (``HOST:GUEST`` inputs)
    instead of its own absolute path. ``include_reasons`` gives some specs another manifest
    reason than ``--include`` (the learn loop's "learned from workload N"). With
    ``include_closures`` an included ELF of the programs' class brings its ``DT_NEEDED``
    closure, and an included program its interpreter, as inputs do. With ``real_paths`` every
    input kept at its own path also appears at its real path (``usr/bin/python3.11`` beside
    ``usr/bin/python3``): programs re-execute themselves through it.
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
        if real_paths and n < len(closure.inputs) and own == lib.path:
            f.add(_target_of(lib.realpath, host_root), _reason(lib, moved))
    loadable: list[tuple[str, str]] = []  # (host path, bundle path) of included programs/ELFs
    for spec in includes:
        host, target = parse_include(spec)
        base = Path(host)
        if not base.exists():
            raise UserError(f"--include {spec}: {host}: no such file or directory")
        reason = (include_reasons or {}).get(spec) or {"kind": "include", "spec": spec}
        files, empty = _walk_include(base, target)
        for src, dest in files:
            plan.file_for(os.path.realpath(src)).add(dest, reason)
            if include_closures and _loadable(src, closure.bits, host_root):
                loadable.append((src, dest))
        for src, dest in empty:
            plan.gaps.append({"path": tar_path(dest), "source": src, "kind": "empty directory"})
    plan.closure = closure
    if loadable:
        plan.closure = _with_includes(plan, closure, loadable, host_root, library_path)
    for f in plan.files:
        if f.source in skip:
            f.rewrite, f.skip_reason = False, "--no-rewrite"
    _refuse_duplicates(plan)
    return plan


Pairs = list[tuple[str, str]]


def _walk_include(base: Path, target: str) -> tuple[Pairs, Pairs]:
    """Files of an include: the file itself, or every regular file below a directory (sorted,
    symlinks followed: the tar filesystem has none); and the directories holding no file at
    all, which tar_ro cannot show (its directories exist only as prefixes of file names)."""
    if not base.is_dir():
        require_regular(base, "--include")
        return [(str(base), target)], []
    out: Pairs = []
    empty: Pairs = []  # the deepest ones: their parents are lost with them
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, base)
        before = len(out)
        for name in sorted(filenames):
            src = os.path.join(dirpath, name)
            if os.path.isfile(src):
                out.append((src, os.path.normpath(os.path.join(target, rel, name))))
        if len(out) == before and not dirnames:
            empty.append((dirpath, os.path.normpath(os.path.join(target, rel))))
    return out, empty


def _target_of(real: str, root: str | None) -> str:
    """The target's path of a host real path (inside ``root`` when there is one)."""
    if root is None:
        return real
    return "/" + os.path.relpath(real, os.path.realpath(root))


def _loadable(path: str, bits: int | None, root: str | None) -> bool:
    """Is ``path`` something the loader or the kernel runs with dependencies of its own: an ELF
    program or shared object of the programs' class and machine (x86-64 when no input is an
    ELF), or an executable ``#!`` script? Under ``root``, only files inside it are resolved
    (the rest have no target tree to resolve in)."""
    if root is not None and not os.path.realpath(path).startswith(os.path.realpath(root) + "/"):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
        executable = os.access(path, os.X_OK)
    except OSError:
        return False
    if head.startswith(b"#!"):
        return executable
    if len(head) < 20 or not head.startswith(b"\x7fELF"):
        return False
    elf_class, machine = head[4], int.from_bytes(head[18:20], "little")
    e_type = int.from_bytes(head[16:18], "little")
    wanted = {32: (1, EM_386), 64: (2, EM_X86_64)}[bits or 64]
    return e_type in (ET_EXEC, ET_DYN) and (elf_class, machine) == wanted


def _with_includes(
    plan: Plan,
    closure: Closure,
    loadable: Pairs,
    host_root: str | None,
    library_path: Sequence[str],
) -> Closure:
    """Add the libraries (and interpreters) the included programs and ELFs load to the plan;
    return the closure the self-check must find in the bundle: the inputs' and theirs, with
    each included object at its bundle path. An included file whose closure is incomplete on
    the host (a stdlib script's ``#!/usr/local/bin/python``) is bundled with what was found and
    a warning; the self-check leaves it out, as it could never pass."""
    try:
        extra = resolve([src for src, _ in loadable], root=host_root, library_path=library_path)
    except UserError as e:
        raise UserError(f"--include: {e}") from None
    for name, by in extra.missing:
        plan.warnings.append(f"--include: {name} (needed by {by}) not found; not bundled")
    for lib in extra.libraries:
        f = plan.file_for(lib.realpath)
        for path in (lib.path, *lib.aliases):
            f.add(path, _reason(lib, {}))
    complete = [i for i, part in enumerate(extra.by_input) if not part.missing]
    wanted = {lib.realpath for i in complete for lib in extra.by_input[i].libraries}
    known = closure.realpaths
    added = [lib for lib in extra.libraries if lib.realpath in wanted - known]
    inputs = []
    for i in complete:
        src, dest = loadable[i]
        inputs.append(Library(src, "/" + tar_path(dest), extra.inputs[i].realpath, "input", None))
        plan.input_paths.append(inputs[-1].path)
    return Closure(
        inputs=[*closure.inputs, *inputs],
        libraries=[*closure.libraries, *added],
        missing=list(closure.missing),
        bits=closure.bits if closure.bits is not None else extra.bits,
    )


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
