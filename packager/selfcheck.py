"""Does the bundle stand on its own? Resolve the closure again inside the bundle's own tree.

The bundled loader sees only the bundle: no host ld.so.cache, no host directories, no
``--library-path``. The check lays the planned tree out as hard links (copies where the file
system refuses) in a temporary directory and walks it with the same resolver, as a root. A
library that was found only through the host's cache or ``--library-path`` is made findable by
an ld.so.cache generated for the bundle; anything still missing is an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .errors import UserError
from .ldcache import FLAG_ELF_LIBC6, FLAGS_X86_64, CacheEntry, build_ldcache
from .plan import Plan, PlannedFile
from .resolve import Closure, resolve

BUNDLE_CACHE = "etc/ld.so.cache"


Extra = list[tuple[str, bytes, int]]  # (tar path, data, mode) entries the bundle needs


def check_self_contained(plan: Plan, closure: Closure) -> Extra:
    """Raise UserError when the bundle cannot load its own programs; else return the extra
    entries it needs (a generated ld.so.cache, or nothing)."""
    source_of = {p: f.source for f in plan.files for p in f.paths}
    inputs = ["/" + tar for tar in _input_paths(plan, closure)]
    if not inputs:
        return []
    wanted = {lib.realpath for lib in closure.libraries}
    with tempfile.TemporaryDirectory(prefix="litebox-pack-check-") as tree:
        _lay_out(tree, source_of)
        problems = _problems(tree, inputs, source_of, wanted)
        if not problems:
            return []
        # Give the bundle the cache entries the host's cache or --library-path provided.
        entries = sorted(
            {
                (name, "/" + p)
                for f in plan.files
                for p in f.paths[:1]
                for name in _names(f, closure)
            }
        )
        flags = FLAG_ELF_LIBC6 if closure.bits == 32 else FLAGS_X86_64
        cache = build_ldcache(CacheEntry(name, path, flags) for name, path in entries)
        if BUNDLE_CACHE in source_of:
            raise UserError(f"the bundle cannot load its libraries: {problems[0]}")
        os.makedirs(os.path.join(tree, os.path.dirname(BUNDLE_CACHE)), exist_ok=True)
        with open(os.path.join(tree, BUNDLE_CACHE), "wb") as fh:
            fh.write(cache)
        problems = _problems(tree, inputs, source_of, wanted)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"the bundle cannot load its libraries: {problems[0]}{more}")
    return [(BUNDLE_CACHE, cache, 0o644)]


def _input_paths(plan: Plan, closure: Closure) -> list[str]:
    by_source = {f.source: f for f in plan.files}
    out = []
    for lib, path in zip(closure.inputs, plan.input_paths, strict=True):
        f = by_source.get(lib.realpath)
        if f is not None:
            out.append(path.lstrip("/"))
    return out


def _names(f: PlannedFile, closure: Closure) -> set[str]:
    """Names a planned file is asked for by: what DT_NEEDED said, and its file name."""
    names = {
        lib.name for lib in closure.libraries if lib.realpath == f.source and "/" not in lib.name
    }
    names.update(os.path.basename(p) for p in f.paths)
    return names


def _lay_out(tree: str, source_of: dict[str, str]) -> None:
    for tar, source in source_of.items():
        dest = os.path.join(tree, tar)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)


def _problems(
    tree: str, inputs: list[str], source_of: dict[str, str], wanted: set[str]
) -> list[str]:
    try:
        again = resolve(inputs, root=tree, use_ld_cache=True)
    except UserError as e:
        return [str(e)]
    out = [f"{name} (needed by {by}) is not in the bundle" for name, by in again.missing]
    found = {
        source_of.get(os.path.relpath(lib.realpath, tree), lib.realpath) for lib in again.libraries
    }
    for real in sorted(wanted - found):
        out.append(f"{real} would not be loaded from the bundle")
    return out
