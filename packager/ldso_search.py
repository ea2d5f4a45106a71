"""ld.so's search rules: where a DT_NEEDED name is looked for, in order, and what ends the search.

This mirrors glibc 2.36's elf/dl-load.c (``_dl_map_object``, ``open_path``, ``open_verify``) and
elf/dl-cache.c (``_dl_load_cache_lookup``). The walk over a program's objects that asks these
questions lives in resolve.py; the loader's parameters (directories, subdirectories, ``$LIB``,
``$PLATFORM``, cache flags) in ldso_model.py.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from rewriter.elf import DF_1_NODEFLIB, ET_DYN, ET_EXEC, DynamicInfo

from .elf_facts import BadObject, Facts, read_facts
from .ldcache import DEFAULT_CACHE, LdCache, load_ldcache
from .ldso_model import LoaderModel
from .targetfs import TargetFs

# Dynamic string tokens ld.so expands (elf/dl-load.c: is_dst): $NAME or ${NAME}, where the bare
# form ends at the first character that cannot continue an identifier.
_DST = re.compile(r"\$(?:\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?![A-Za-z0-9_]))")


@dataclass(eq=False)
class LoadedObject:
    """A loaded object of one program (ld.so's link_map)."""

    path: str  # l_name: the target path it was opened by ("" never: we keep the input path)
    realpath: str
    identity: tuple[int, int] | None  # None for the program: ld.so records none for it
    facts: Facts
    loader: LoadedObject | None  # l_loader: the object whose DT_NEEDED brought it in
    names: set[str]
    origin: str
    is_main: bool = False
    queued: bool = False
    rpath_dirs: list[str] | None = None  # expanded once, on first use
    runpath_dirs: list[str] | None = None
    llp_dirs: list[str] | None = None  # the program's view of --library-path

    @property
    def dyn(self) -> DynamicInfo:
        return self.facts.dynamic or DynamicInfo((), None, None, None, 0)

    @property
    def nodeflib(self) -> bool:
        return bool(self.dyn.flags_1 & DF_1_NODEFLIB)

    def answers_to(self, name: str) -> bool:
        # _dl_name_match_p: l_name or any recorded name (DT_SONAME, earlier requests). ld.so
        # leaves the program's l_name empty, so its path never matches.
        return (not self.is_main and name == self.path) or name in self.names


@dataclass(frozen=True)
class Found:
    path: str
    realpath: str
    identity: tuple[int, int]
    facts: Facts
    rule: str

    def ruled(self, rule: str) -> Found:
        return Found(self.path, self.realpath, self.identity, self.facts, rule)


class Miss(Enum):
    ABSENT = "absent"
    OTHER_ARCH = "another class or machine"


@dataclass(frozen=True)
class Attempt:
    """One place a failed search looked (like libtree's report): a directory's candidate (its
    hwcap subdirectories included), the ld.so.cache entry, a path; and what was there."""

    path: str
    rule: str
    result: str  # "absent", "another ELF class or machine", "no entry", ...

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule, "result": self.result}


OTHER_ARCH_RESULT = "another ELF class or machine (skipped)"


class Searcher:
    """Answers "which file does ld.so open for this name, asked by this object?"."""

    def __init__(
        self, fs: TargetFs, cwd: str, library_path: Sequence[str], use_ld_cache: bool
    ) -> None:
        self.fs = fs
        self.cwd = cwd
        self.library_path = list(library_path)
        self.use_ld_cache = use_ld_cache
        self._cache: LdCache | bool | None = False  # False: not loaded yet
        self._probes: dict[str, Found | str | Miss] = {}

    def absolute(self, path: str) -> str:
        # ld.so opens relative names relative to the process's current directory.
        return path if path.startswith("/") else os.path.join(self.cwd, path)

    def ldcache(self) -> LdCache | None:
        if self._cache is False:
            if self.fs.root is None:
                self._cache = load_ldcache(DEFAULT_CACHE)
            else:
                self._cache = load_ldcache(self.fs.host(DEFAULT_CACHE))
        return self._cache if isinstance(self._cache, LdCache) else None

    def expand(self, text: str, obj: LoadedObject, model: LoaderModel) -> str:
        # _dl_dst_substitute: $ORIGIN is the directory of the object's own path (l_name, or the
        # program's real path); $PLATFORM and $LIB are fixed for the loader build.
        values = {"ORIGIN": obj.origin, "PLATFORM": model.platform, "LIB": model.lib}
        return _DST.sub(lambda m: values[m.group(1) or m.group(2)], text)

    def dirs(self, spec: str | Sequence[str], obj: LoadedObject, model: LoaderModel) -> list[str]:
        """A search path as ld.so stores it: expanded, one trailing "/", no duplicates.

        An empty element means the current directory; one that expands to nothing is dropped
        (fillin_rpath / decompose_rpath).
        """
        out: list[str] = []
        for part in spec.split(":") if isinstance(spec, str) else spec:
            d = ""
            if part:
                d = self.expand(part, obj, model)
                if not d:
                    continue
                d = d.rstrip("/") + "/"
            if d not in out:
                out.append(d)
        return out

    def probe(self, tpath: str, model: LoaderModel) -> Found | str | Miss:
        """A candidate file: usable (a Found whose rule is unset), absent or skipped (Miss),
        or refused with a reason that stops the search (str), as ld.so's open_verify."""
        if tpath in self._probes:
            return self._probes[tpath]
        result: Found | str | Miss
        hit = self.fs.lookup(tpath)
        if hit is None:
            result = Miss.ABSENT
        else:
            real, st = hit
            try:
                facts = read_facts(real, st)
            except BadObject as e:
                result = f"{tpath}: {e}"
            else:
                # open_verify's order: another class is skipped, a foreign byte order is an
                # error, another machine is skipped again.
                if facts.bits != model.bits:
                    result = Miss.OTHER_ARCH
                elif not facts.little_endian:
                    result = f"{tpath}: ELF file data encoding not little-endian"
                elif facts.machine != model.machine:
                    result = Miss.OTHER_ARCH
                elif facts.type not in (ET_DYN, ET_EXEC):
                    result = f"{tpath}: only ET_DYN and ET_EXEC can be loaded"
                else:
                    result = Found(tpath, real, (st.st_dev, st.st_ino), facts, "")
        self._probes[tpath] = result
        return result

    def try_dirs(
        self,
        name: str,
        dirs: Sequence[str],
        rule: str,
        model: LoaderModel,
        skipped: list[bool],
        tried: list[Attempt] | None = None,
    ) -> Found | str | None:
        # open_path: each directory in order, and in each its hwcap subdirectories best first,
        # then the directory itself; the first usable file wins.
        for d in dirs:
            other = ""  # the first candidate of another class or machine, for the report
            for sub in model.subdirs:
                cand = self.absolute(d + sub + name)
                got = self.probe(cand, model)
                if isinstance(got, Miss):
                    if got is Miss.OTHER_ARCH:
                        skipped[0] = True
                        other = other or cand
                    continue
                if isinstance(got, str):
                    if tried is not None:
                        tried.append(Attempt(cand, rule, "refused"))
                    return got
                return got.ruled(f"{rule} ({sub.rstrip('/')})" if sub else rule)
            if tried is not None:
                tried.append(
                    Attempt(other, rule, OTHER_ARCH_RESULT)
                    if other
                    else Attempt(self.absolute(d + name), rule, "absent")
                )
        return None

    def search_path(
        self, req: LoadedObject, main: LoadedObject, model: LoaderModel
    ) -> Iterator[tuple[list[str], str]]:
        """The directory lists searched before ld.so.cache, in order, with their rule."""
        # DT_RPATH, only when the requesting object has no DT_RUNPATH: its own, then its
        # loader's, up the l_loader chain to the program, whose DT_RPATH is searched last (and
        # once) even when it is not on the chain (a dlopen'ed object's case in ld.so).
        if req.dyn.runpath is None:
            did_main = False
            obj: LoadedObject | None = req
            while obj is not None:
                if dirs := self.rpath_of(obj, model):
                    yield dirs, f"DT_RPATH of {obj.path}"
                    did_main |= obj is main
                obj = obj.loader
            if not did_main and (dirs := self.rpath_of(main, model)):
                yield dirs, f"DT_RPATH of {main.path}"
        # LD_LIBRARY_PATH, expanded with the program's $ORIGIN (ld.so decomposes it at start-up).
        if self.library_path:
            if main.llp_dirs is None:
                main.llp_dirs = self.dirs(self.library_path, main, model)
            yield main.llp_dirs, "--library-path"
        # DT_RUNPATH of the requesting object only: it is not inherited by dependents.
        if req.dyn.runpath:
            if req.runpath_dirs is None:
                req.runpath_dirs = self.dirs(req.dyn.runpath, req, model)
            yield req.runpath_dirs, "DT_RUNPATH"

    def rpath_of(self, obj: LoadedObject, model: LoaderModel) -> list[str]:
        # An object with DT_RUNPATH contributes no DT_RPATH, not even to its dependents.
        if obj.rpath_dirs is None:
            rpath = obj.dyn.rpath if obj.dyn.runpath is None else None
            obj.rpath_dirs = self.dirs(rpath, obj, model) if rpath else []
        return obj.rpath_dirs

    def search(
        self,
        name: str,
        req: LoadedObject,
        main: LoadedObject,
        model: LoaderModel,
        tried: list[Attempt] | None = None,
    ) -> Found | str:
        """Where ld.so finds ``name`` for ``req``, or why it does not.

        ``tried``, when given, receives every place looked at (asked for after a failed search
        only: the probes are memoised, so the second pass costs little).
        """
        # A name with a slash is opened as it is, no search at all.
        if "/" in name:
            path = self.absolute(name)
            got = self.probe(path, model)
            if isinstance(got, Found):
                return got.ruled("path in DT_NEEDED")
            if tried is not None:
                result = OTHER_ARCH_RESULT if got is Miss.OTHER_ARCH else "absent"
                tried.append(Attempt(path, "path in DT_NEEDED", result))
            return got if isinstance(got, str) else "not found"
        skipped = [False]
        for dirs, rule in self.search_path(req, main, model):
            if (found := self.try_dirs(name, dirs, rule, model, skipped, tried)) is not None:
                return found
        # /etc/ld.so.cache: one entry at most (the best for this CPU), whose file is verified
        # like any other candidate.
        if self.use_ld_cache:
            cache = self.ldcache()
            entry = cache.lookup(name, model.cache) if cache is not None else None
            if entry is None:
                if tried is not None:
                    result = "no entry" if cache is not None else "no usable cache"
                    tried.append(Attempt(DEFAULT_CACHE, "ld.so.cache", result))
            # With DF_1_NODEFLIB, entries under a default directory are ignored (by prefix).
            elif req.nodeflib and entry.value.startswith(model.system_dirs):
                if tried is not None:
                    tried.append(Attempt(entry.value, "ld.so.cache", "ignored (DF_1_NODEFLIB)"))
            else:
                got = self.probe(self.absolute(entry.value), model)
                if isinstance(got, str):
                    return got
                if isinstance(got, Found):
                    sub = entry.hwcaps_subdir
                    return got.ruled("ld.so.cache" + (f" (glibc-hwcaps/{sub})" if sub else ""))
                skipped[0] |= got is Miss.OTHER_ARCH
                if tried is not None:
                    result = OTHER_ARCH_RESULT if got is Miss.OTHER_ARCH else "absent"
                    tried.append(Attempt(entry.value, "ld.so.cache", result))
        # The compiled-in default directories, unless the requesting object has DF_1_NODEFLIB.
        if not req.nodeflib:
            found = self.try_dirs(
                name, model.system_dirs, "default directory", model, skipped, tried
            )
            if found is not None:
                return found
        elif tried is not None:
            for d in model.system_dirs:
                tried.append(Attempt(d + name, "default directory", "skipped (DF_1_NODEFLIB)"))
        if skipped[0]:
            return "not found (a file of another ELF class or machine was skipped)"
        return "not found"
