"""The bundle side of ``litebox-pack run``: lay a bundle out, find the program, check trailers,
decide the stub ABI.

A tar is extracted into a private temporary directory (removed afterwards); a directory is used
as it is. Only regular files and directories are accepted, and no member may leave the bundle.
``tar_ro_tree`` lays a bundle out the way LiteBox's tar_ro shows it, for the LiteBox view.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rewriter import TrailerCheck, TrailerState, check_trailer

from ..errors import UserError
from ..hooked import check_matches, main_entry

MANIFEST = "litebox/manifest.json"
TRAILER = 32
ELF_MAGIC = b"\x7fELF"
EM_386 = 3
EM_X86_64 = 62
MAX_SCRIPT_DEPTH = 4  # "#!" levels, as the runtime (and the kernel) follow them
# How each ABI's stubs enter the runtime (spec/stub-abi.md). A redzone stub of strategy (b)
# also holds the resume sequence, so the redzone pattern is looked for first.
REDZONE_ENTRY = bytes.fromhex("488d642480 4c8d1d")
RESUME_ENTRY = bytes.fromhex("488d0d06000000 ff25")
ABIS = ("redzone", "resume")


@dataclass(frozen=True)
class Bundle:
    root: Path  # absolute directory holding the bundle's tree
    source: Path  # what the user named (tar or directory)
    manifest: dict[str, Any] | None
    owned: bool = False  # root is our own extraction (a tar's), not the user's directory

    def host_path(self, inside: str) -> Path:
        """Where an absolute in-bundle path lives on the host."""
        return self.root / inside.lstrip("/")


@contextlib.contextmanager
def open_bundle(source: Path, scratch: Path | None = None) -> Iterator[Bundle]:
    """Yield the bundle laid out as a directory; a tar's extraction is removed afterwards.

    With ``scratch`` (an existing private directory the caller removes) a tar is extracted
    into ``scratch/bundle`` instead of a temporary directory of its own: one less to make."""
    if source.is_dir():
        root = source.resolve()
        yield Bundle(root, source, _manifest(root, source))
        return
    if not source.exists():
        raise UserError(f"{source}: no such file or directory")
    tmp = scratch / "bundle" if scratch else Path(tempfile.mkdtemp(prefix="litebox-run-"))
    try:
        tmp.mkdir(exist_ok=True)
        _extract(source, tmp)
        yield Bundle(tmp, source, _manifest(tmp, source), owned=True)
    finally:
        if scratch is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _extract(source: Path, dest: Path) -> None:
    try:
        with tarfile.open(source, "r:*") as tar:
            try:
                for member in tar:
                    _extract_member(tar, member, source, dest)
            except (tarfile.TarError, EOFError, zlib.error) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise UserError(f"{source}: corrupt tar archive ({first})") from None
    except OSError as e:
        raise UserError(f"{source}: cannot extract: {e.strerror or e}") from None
    except tarfile.TarError:
        raise UserError(f"{source}: not a tar archive or a directory") from None


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, source: Path, dest: Path) -> None:
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts:
        raise UserError(f"{source}: member {m.name!r} would land outside the bundle")
    target = dest.joinpath(*[p for p in name.parts if p not in ("", ".")])
    if m.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    if not m.isreg():
        raise UserError(
            f"{source}: member {m.name!r} is not a regular file (bundles hold no links)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    f = tar.extractfile(m)
    if f is None:
        raise UserError(f"{source}: member {m.name!r} cannot be read")
    with f, open(target, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    os.chmod(target, (m.mode & 0o777) | stat.S_IRUSR)


def tar_ro_tree(bundle: Bundle, scratch: Path) -> Path:
    """The bundle as LiteBox's tar_ro shows it: regular files only (with their modes), each
    directory implied by the files under it, mode 0777, and every mtime 0 (the tar's).

    A tar's extraction is ours and is fixed in place; a user's directory is never touched: its
    regular files are copied under ``scratch`` (symlinks and empty directories, which a tar for
    LiteBox cannot hold, are left out)."""
    root = bundle.root
    if not bundle.owned:
        root = scratch
        root.mkdir(mode=0o777)
        for dirpath, _dirs, files in os.walk(bundle.root):
            for name in files:
                src = Path(dirpath, name)
                if src.is_symlink() or not src.is_file():
                    continue
                dst = root / src.relative_to(bundle.root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                os.chmod(dst, (src.stat().st_mode & 0o777) | stat.S_IRUSR)
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(Path(dirpath, name), (0, 0), follow_symlinks=False)
        os.chmod(dirpath, 0o777)
        os.utime(dirpath, (0, 0))
    return root


def _manifest(root: Path, source: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{source}: {MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{source}: {MANIFEST} is not a JSON object")
    return doc


# --- what to run -------------------------------------------------------------------------------


def program_path(bundle: Bundle, program: str) -> str:
    """Check PROGRAM names a file inside the bundle; return it normalised."""
    if not program.startswith("/"):
        raise UserError(f"{program}: PROGRAM must be an absolute path inside the bundle")
    norm = os.path.normpath(program)
    if not bundle.host_path(norm).is_file():
        raise UserError(f"{program}: not in the bundle {bundle.source}")
    return norm


def hooked_program_path(bundle: Bundle, hooked: Path) -> str:
    """The in-bundle path of the main binary a ``.hooked`` file stands for.

    The manifest's ``main`` says it (older manifests: its input entries, ``included_because``
    kind ``input``); without a manifest, the file of the same name in the bundle. A ``.hooked``
    whose sha256 is not the one the manifest records is refused.
    """
    if not hooked.is_file():
        raise UserError(f"{hooked}: no such file")
    check_matches(hooked, bundle.source, bundle.manifest)
    main = main_entry(bundle.manifest)
    if main is not None and "main" in (bundle.manifest or {}):
        return "/" + main[0].lstrip("/")
    name = hooked.name.removesuffix(".hooked")
    inputs = [p for p in _manifest_inputs(bundle.manifest) if bundle.host_path(p).is_file()]
    if inputs:
        same_name = [p for p in inputs if PurePosixPath(p).name == name]
        return "/" + (same_name or inputs)[0].lstrip("/")
    hits = sorted(
        "/" + str(p.relative_to(bundle.root))
        for p in bundle.root.rglob(name)
        if p.is_file() and not str(p.relative_to(bundle.root)).startswith("litebox/")
    )
    if not hits:
        raise UserError(f"{hooked}: no {name!r} in the bundle {bundle.source} to stand in for")
    # Several copies (e.g. /bin/x and /usr/bin/x) are the same file; prefer the shortest path.
    return min(hits, key=lambda p: (len(p), p))


def _manifest_inputs(doc: dict[str, Any] | None) -> list[str]:
    """Tar paths of the files the manifest lists as inputs, in its order."""
    files = (doc or {}).get("files")
    out: list[str] = []
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        why = entry.get("included_because")
        is_input = isinstance(why, list) and any(
            isinstance(r, dict) and r.get("kind") == "input" for r in why
        )
        paths = entry.get("paths")
        if is_input and isinstance(paths, list):
            out += [p for p in paths if isinstance(p, str)]
    return out


# --- trailers and the ABI -------------------------------------------------------------------


@dataclass(frozen=True)
class ElfScan:
    rewritten: list[Path]  # ELF files with a valid trailer carrying a trampoline
    markers: int  # ELF files with the header-only marker


def scan_elves(bundle: Bundle) -> ElfScan:
    """Check every ELF's trailer; an invalid one is an error naming the file."""
    rewritten: list[Path] = []
    markers = 0
    for dirpath, _dirs, files in os.walk(bundle.root):
        for name in files:
            path = Path(dirpath, name)
            state = _trailer_of(path)
            if state is None:
                continue
            if state.state is TrailerState.VALID and state.trailer and state.trailer.size:
                rewritten.append(path)
            elif state.state is TrailerState.VALID:
                markers += 1
            elif state.state in (TrailerState.INVALID, TrailerState.BAD_VERSION):
                inside = "/" + str(path.relative_to(bundle.root))
                raise UserError(
                    f"{inside}: invalid LITEBOX0 trailer in {bundle.source} ({state.problem})"
                )
    return ElfScan(rewritten, markers)


def _trailer_of(path: Path) -> TrailerCheck | None:
    """The trailer check of an ELF file (None for other files), reading only what it needs.

    An ELF32 carries the 20-byte form of the trailer, an ELF64 the 32-byte one."""
    try:
        with open(path, "rb") as f:
            ident = f.read(5)
            if ident[:4] != ELF_MAGIC:
                return None
            bits = 32 if ident[4:5] == b"\x01" else 64
            # check_trailer reads the last 32 bytes and the length: a map touches one page.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return check_trailer(data, bits)  # type: ignore[arg-type]
    except (OSError, ValueError):
        return None


def has_trailer(path: Path) -> bool:
    state = _trailer_of(path)
    return state is not None and state.state is TrailerState.VALID


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def elf_arch(path: Path) -> str | None:
    """``x86_64`` or ``i386`` for an ELF of those machines, None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != ELF_MAGIC or head[5] != 1:  # little-endian only
        return None
    machine = int.from_bytes(head[18:20], "little")
    return {(2, EM_X86_64): "x86_64", (1, EM_386): "i386"}.get((head[4], machine))


def program_arch(bundle: Bundle, image: Path) -> str:
    """Which runtime runs ``image``: its own ELF machine, a "#!" script's interpreter's (taken
    from the bundle, as the runtime does), x86_64 when neither says."""
    for _ in range(MAX_SCRIPT_DEPTH + 1):
        arch = elf_arch(image)
        if arch:
            return arch
        interp = _shebang_interpreter(image)
        if interp is None or not interp.startswith("/"):
            break
        image = bundle.host_path(interp)
    return "x86_64"


def _shebang_interpreter(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            line = f.read(256).split(b"\n", 1)[0]
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    words = line[2:].split()
    return words[0].decode(errors="replace") if words else None


def stub_abi(path: Path) -> str | None:
    """The ABI of the stubs in ``path``'s trampoline blob, None when it has none."""
    state = _trailer_of(path)
    if state is None or state.state is not TrailerState.VALID or not state.trailer:
        return None
    if not state.trailer.size:
        return None
    with open(path, "rb") as f:
        f.seek(state.trailer.file_offset + 8)
        blob = f.read(state.trailer.size - 8)
    if REDZONE_ENTRY in blob:
        return "redzone"
    if RESUME_ENTRY in blob:
        return "resume"
    return None


def detect_abi(bundle: Bundle, first: list[Path], scan: ElfScan) -> tuple[str | None, str]:
    """The bundle's ABI and where it was read: the manifest, else the stubs of ``first``
    (the program, its interpreter) and then of any other rewritten file."""
    opts = (bundle.manifest or {}).get("options")
    if isinstance(opts, dict) and opts.get("abi") in ABIS:
        return str(opts["abi"]), "manifest"
    seen: set[Path] = set()
    for path in [*first, *scan.rewritten]:
        if path in seen:
            continue
        seen.add(path)
        abi = stub_abi(path)
        if abi:
            return abi, f"stubs of {path.name}"
    return None, "no stubs"
