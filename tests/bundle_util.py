"""Test bundles made the way LiteBox's packager lays them out, until `litebox-pack pack` lands.

A program's closure comes from ``ldd`` (tests may run it); every file is rewritten with
``rewrite_elf`` and copied (no symlinks) to every path ldd printed, to its real path and, for
the programs themselves, to the path they were given as. Optionally the directory is tarred as
strict ustar with regular files only, like the real bundles.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

from rewriter import rewrite_elf

_LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_PATH = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")

# Rewrites are pure functions of (content, options): share them across the whole test session.
_rewritten: dict[tuple[str, int, str], bytes] = {}


def ldd_paths(program: str | os.PathLike[str]) -> list[str]:
    """Every path ldd prints for ``program`` (libraries and the interpreter), in its order."""
    res = subprocess.run(["ldd", str(program)], capture_output=True, text=True, timeout=60)
    paths: list[str] = []
    for line in res.stdout.splitlines():
        m = _LDD_ARROW.match(line) or _LDD_PATH.match(line)
        if m:
            paths.append(m.groups()[-1])
    return paths


def rewritten(real: Path, abi: str) -> bytes:
    """``real`` rewritten for ``abi``; a site with no room for a jump is kept as a syscall, so
    it shows up as an escape in `run`'s report instead of crashing the program."""
    st = real.stat()
    key = (str(real), st.st_mtime_ns, abi)
    if key not in _rewritten:
        _rewritten[key] = rewrite_elf(real.read_bytes(), abi=abi, unpatchable="keep").data
    return _rewritten[key]


def make_bundle(
    dest: Path,
    programs: Iterable[str | os.PathLike[str]],
    *,
    abi: str = "redzone",
    no_rewrite: Iterable[str | os.PathLike[str]] = (),
    extra: Iterable[str | os.PathLike[str]] = (),
    manifest: bool = True,
) -> Path:
    """Lay out ``programs`` (and ``extra`` files, e.g. plugins) with their closures in ``dest``.

    Files whose real path is in ``no_rewrite`` are copied unchanged (to provoke escapes).
    With ``manifest`` a ``litebox/manifest.json`` records the ABI and the first program as input.
    """
    keep = {os.path.realpath(p) for p in no_rewrite}
    placed: dict[str, Path] = {}  # bundle path -> real source file
    programs = [str(p) for p in programs]
    for item in [*programs, *map(str, extra)]:
        absolute = os.path.abspath(item)
        placed[absolute] = Path(os.path.realpath(absolute))
        for lib in ldd_paths(absolute):
            placed[lib] = Path(os.path.realpath(lib))
    for real in list(placed.values()):
        placed.setdefault(str(real), real)
    for path, real in sorted(placed.items()):
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = real.read_bytes() if str(real) in keep else rewritten(real, abi)
        target.write_bytes(data)
        os.chmod(target, real.stat().st_mode & 0o777)
    if manifest:
        # The shape `litebox-pack pack` writes (the parts `run` reads).
        inputs = {os.path.realpath(p) for p in programs[:1]}
        by_real: dict[Path, list[str]] = {}
        for path, real in sorted(placed.items()):
            by_real.setdefault(real, []).append(path.lstrip("/"))
        doc = {
            "tool": "litebox-pack",
            "options": {"abi": abi},
            "files": [
                {
                    "paths": paths,
                    "source": str(real),
                    "included_because": [
                        {"kind": "input"} if str(real) in inputs else {"kind": "needed"}
                    ],
                }
                for real, paths in by_real.items()
            ],
        }
        meta = dest / "litebox" / "manifest.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(doc, indent=1))
    return dest


def tar_bundle(src: Path, tar_path: Path) -> Path:
    """Tar a bundle directory as strict ustar, regular files only, sorted."""
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(src)))
            info.uid = info.gid = 1000
            info.uname = info.gname = ""
            info.mtime = 0
            with path.open("rb") as f:
                tar.addfile(info, f)
    return tar_path
