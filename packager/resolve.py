"""The dependency walker: which files glibc's ld.so would load for a program, without running it.

It follows ld.so 2.36 as Debian builds it (elf/dl-load.c, dl-deps.c, dl-cache.c semantics):

* The kernel maps the program and its PT_INTERP; ld.so then loads DT_NEEDED breadth-first. A
  requested name is satisfied by an already loaded object whose path, requested names or
  DT_SONAME match it, or -- after the file is found -- whose file identity matches (the main
  program excepted: ld.so records no file identity for it, so it can be loaded a second time).
* A name containing ``/`` is a path. Otherwise ld.so searches, in order: DT_RPATH of the
  requesting object, then of the object that loaded it, and so on up to the program (skipped
  entirely when the requesting object has DT_RUNPATH, and an object with DT_RUNPATH contributes
  no DT_RPATH), then LD_LIBRARY_PATH (``library_path``), the requesting object's own DT_RUNPATH,
  /etc/ld.so.cache, and the default directories. With DF_1_NODEFLIB on the requesting object,
  the default directories and every cache entry under them are skipped.
* Every directory is searched in its glibc-hwcaps subdirectories (x86-64-v4..v2 as the CPU
  supports), then in the legacy hwcap subdirectories glibc 2.36 still has (tls, platform and
  hwcap names, all combinations), then itself.
* ``$ORIGIN`` is the directory of the path the object was opened by; for the program it is the
  directory of its real path (what /proc/self/exe shows), not of a symlink used to start it.
  ``$LIB`` and ``$PLATFORM`` are what Debian's ld.so uses (``lib/x86_64-linux-gnu``, and the
  AT_PLATFORM ``x86_64`` unless glibc renames it ``haswell``/``xeon_phi`` on Intel CPUs).
* A candidate of another ELF class or machine is skipped and the search goes on; a candidate
  that is not ELF at all (or a directory) stops the search with an error, as in ld.so.

All paths the loader sees are "target" paths; with ``root`` they live under that directory and
every symlink is resolved inside it (an absolute link target restarts at the root, ``..`` stops
there), so nothing is ever read from the host's own tree. Relative names are taken relative to
the current directory on the host, and to ``/`` under a root.

The modules: ldso_model.py (the loader's parameters for a class and machine on this CPU),
ldso_search.py (the search rules for one name), elf_facts.py (what is read of each object),
targetfs.py (paths inside a root); this one walks the programs and their objects.

Not modelled: LD_PRELOAD, secure-mode (setuid) restrictions, DT_FILTER/DT_AUXILIARY filtees,
the ABI-note OS version check, dlopen(). For i386 the default directories are those of
Debian's multiarch libc6:i386 (/lib/i386-linux-gnu, /usr/lib/i386-linux-gnu, /lib, /usr/lib);
a program whose interpreter is the biarch libc6-i386 build (its compiled-in search path names
/usr/lib32, wherever the file sits) searches /lib32 and /usr/lib32 first.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rewriter.elf import EM_386, EM_X86_64, MACHINE_NAMES

from .elf_facts import BadObject, Facts, built_for_lib32, read_facts, read_head
from .errors import UserError
from .ldso_model import CpuInfo, LoaderModel, loader_model
from .ldso_search import Attempt, LoadedObject, Searcher
from .targetfs import TargetFs, confined_realpath

# Re-exported: callers and tests name them through this module.
__all__ = [
    "DEFAULT_PATH",
    "Closure",
    "CpuInfo",
    "InputClosure",
    "Library",
    "MissingLibrariesError",
    "confined_realpath",
    "loader_model",
    "resolve",
]

# What env(1) sees when the runtime environment does not say otherwise (Debian's default).
DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MAX_SCRIPT_DEPTH = 4  # nested #! interpreters the kernel follows
SHEBANG_BYTES = 256  # the kernel's BINPRM_BUF_SIZE


# -- public types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Library:
    """One object of a closure.

    ``path`` is the path the loader opens, as the target sees it ("/..." even under a root);
    ``realpath`` the host path of the real file. ``aliases`` are other target paths at which the
    loader (of this or another input) opened the same real file.
    """

    name: str
    path: str
    realpath: str
    rule: str
    needed_by: str | None
    aliases: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "path": self.path,
            "realpath": self.realpath,
            "rule": self.rule,
            "needed_by": self.needed_by,
        }
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out


class MissingLibrariesError(UserError):
    """Some libraries cannot be found; the message lists each with the object needing it, and
    with ``tried`` also every place the search looked (still one line)."""

    def __init__(
        self,
        missing: Sequence[tuple[str, str]],
        tried: dict[tuple[str, str], list[Attempt]] | None = None,
    ) -> None:
        self.missing = tuple(missing)
        listed = ", ".join(
            f"{name} (needed by {by}{_tried_summary(tried.get((name, by), []) if tried else [])})"
            for name, by in self.missing
        )
        n = len(self.missing)
        super().__init__(f"{n} missing librar{'y' if n == 1 else 'ies'}: {listed}")


def _tried_summary(tried: Sequence[Attempt]) -> str:
    """``; tried RULE PATH PATH: RESULT, ...``: consecutive places with one rule and result
    grouped; "absent" is not repeated."""
    groups: list[tuple[str, list[str], str]] = []
    for a in tried:
        if groups and groups[-1][0] == a.rule and groups[-1][2] == a.result:
            groups[-1][1].append(a.path)
        else:
            groups.append((a.rule, [a.path], a.result))
    shown = [
        f"{rule} {' '.join(paths)}" + ("" if result == "absent" else f": {result}")
        for rule, paths, result in groups
    ]
    return "; tried " + ", ".join(shown) if shown else ""


@dataclass
class InputClosure:
    """What one input's own program(s) load, each real file once, as found there."""

    libraries: list[Library] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Closure:
    """Inputs, then every other object in load (breadth-first) order, each real file once."""

    inputs: list[Library]
    libraries: list[Library]
    missing: list[tuple[str, str]]  # (name, needed_by)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)  # when not "not found"
    tried: dict[tuple[str, str], list[Attempt]] = field(default_factory=dict)  # where searched
    by_input: list[InputClosure] = field(default_factory=list)  # parallel to ``inputs``
    bits: int | None = None  # ELF class of the programs (None when no input is an ELF program)

    def raise_if_missing(self, *, explain: bool = False) -> None:
        """Raise MissingLibrariesError; ``explain`` adds the places each search looked."""
        if self.missing:
            raise MissingLibrariesError(self.missing, self.tried if explain else None)

    @property
    def realpaths(self) -> set[str]:
        """Host paths of every real file the loader opens for the inputs (inputs included)."""
        return {lib.realpath for lib in (*self.inputs, *self.libraries)}

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [lib.to_json() for lib in self.inputs],
            "libraries": [lib.to_json() for lib in self.libraries],
            "missing": [
                {
                    "name": name,
                    "needed_by": by,
                    "reason": self.reasons.get((name, by), "not found"),
                    "tried": [a.to_json() for a in self.tried.get((name, by), [])],
                }
                for name, by in self.missing
            ],
        }


# -- the walk --------------------------------------------------------------------------------


@dataclass
class _Rec:
    """A closure entry being collected: the first way the file was found, then aliases."""

    name: str
    path: str
    realpath: str
    rule: str
    needed_by: str | None
    aliases: list[str] = field(default_factory=list)

    def freeze(self) -> Library:
        return Library(
            self.name, self.path, self.realpath, self.rule, self.needed_by, tuple(self.aliases)
        )


class _Walker:
    def __init__(self, root: str | None, library_path: Sequence[str], use_ld_cache: bool) -> None:
        if root is not None and not os.path.isdir(root):
            raise UserError(f"{root}: --root is not a directory")
        self.fs = TargetFs(root)
        self.ld = Searcher(
            self.fs, "/" if root is not None else os.getcwd(), library_path, use_ld_cache
        )
        self.model: LoaderModel | None = None
        self.model_from = ""
        self.inputs: list[Library] = []
        self.by_input: list[InputClosure] = []
        self.libs: dict[str, _Rec] = {}
        self.missing: list[tuple[str, str]] = []
        self.reasons: dict[tuple[str, str], str] = {}
        self.tried: dict[tuple[str, str], list[Attempt]] = {}

    # -- helpers ----------------------------------------------------------------------------

    def absolute(self, path: str) -> str:
        return self.ld.absolute(path)

    def record(self, name: str, path: str, real: str, rule: str, needed_by: str | None) -> None:
        mine = self.by_input[-1].libraries
        if all(lib.realpath != real for lib in mine):
            mine.append(Library(name, path, real, rule, needed_by))
        rec = self.libs.get(real)
        if rec is None:
            self.libs[real] = _Rec(name, path, real, rule, needed_by)
        elif path != rec.path and path not in rec.aliases:
            rec.aliases.append(path)

    def miss(
        self,
        name: str,
        needed_by: str,
        reason: str | None = None,
        tried: Sequence[Attempt] = (),
    ) -> None:
        key = (name, needed_by)
        if key not in self.by_input[-1].missing:
            self.by_input[-1].missing.append(key)
        if key not in self.missing:
            self.missing.append(key)
            if reason:
                self.reasons[key] = reason
            if tried:
                self.tried[key] = list(tried)

    def model_for(self, tpath: str, facts: Facts, interp_host: str | None) -> LoaderModel:
        if (facts.bits, facts.machine) not in ((64, EM_X86_64), (32, EM_386)):
            machine = MACHINE_NAMES.get(facts.machine, f"machine {facts.machine}")
            raise UserError(
                f"{tpath}: ELF{facts.bits} {machine} programs are not supported "
                "(x86-64 and i386 only)"
            )
        if self.model is None:
            lib32 = interp_host is not None and built_for_lib32(interp_host)
            self.model = loader_model(facts.bits, facts.machine, CpuInfo.host(), lib32=lib32)
            self.model_from = tpath
        elif (self.model.bits, self.model.machine) != (facts.bits, facts.machine):
            mine = loader_model(facts.bits, facts.machine, CpuInfo.host()).name
            raise UserError(
                f"{tpath}: {mine}, but {self.model_from} is {self.model.name}: "
                "all inputs must share one ELF class and machine"
            )
        return self.model

    # -- inputs and executables --------------------------------------------------------------

    def add_input(self, arg: str) -> None:
        tpath = os.path.normpath(self.absolute(arg))
        if self.fs.root is not None and self.fs.lookup(tpath) is None:
            # A host path pointing into the root is accepted too.
            inside = self.fs.root.rstrip("/") + "/"
            for host in (os.path.abspath(arg), os.path.realpath(arg)):
                if host.startswith(inside):
                    tpath = self.fs.target(host)
                    break
        found = self.fs.lookup(tpath)
        where = f" (under {self.fs.root})" if self.fs.root is not None else ""
        if found is None:
            if os.path.islink(arg) and self.fs.root is None:
                raise UserError(f"{arg}: dangling symlink")
            raise UserError(f"{arg}: no such file{where}")
        real, st = found
        if stat.S_ISDIR(st.st_mode):
            raise UserError(f"{arg}: is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{arg}: not a regular file")
        try:
            head = read_head(real, SHEBANG_BYTES)
        except OSError as e:
            raise UserError(f"{arg}: cannot read: {e.strerror or e}") from None
        if head.startswith(b"\x7fELF"):
            try:
                read_facts(real, st)
            except BadObject as e:
                raise UserError(f"{arg}: not a valid ELF file: {e}") from None
        self.inputs.append(Library(arg, tpath, real, "input", None))
        self.by_input.append(InputClosure())
        self.execute(tpath, real, st, head, depth=0)

    def execute(
        self, tpath: str, real: str, st: os.stat_result, head: bytes, *, depth: int
    ) -> None:
        """What the kernel does with execve(tpath): a script's interpreter, or an ELF program."""
        if head.startswith(b"#!"):
            self.script(tpath, head, depth)
        elif head.startswith(b"\x7fELF"):
            try:
                facts = read_facts(real, st)
            except BadObject as e:
                raise UserError(f"{tpath}: not a valid ELF file: {e}") from None
            self.program(tpath, real, facts)
        # Anything else is data for this purpose: it needs nothing.

    def script(self, tpath: str, head: bytes, depth: int) -> None:
        # The kernel's rule: the interpreter runs up to the first blank; the rest of the line,
        # trimmed, is one argument.
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape").lstrip(" \t")
        cut = next((i for i, c in enumerate(line) if c in " \t"), len(line))
        interp, arg = line[:cut], line[cut:].strip(" \t")
        if not interp:
            return  # the kernel refuses to run it; there is nothing to load
        if depth >= MAX_SCRIPT_DEPTH:
            self.miss(interp, tpath, "too many levels of #! interpreters")
            return
        ipath = self.absolute(interp)
        if not self.run_interpreter(interp, ipath, "#! interpreter", tpath, depth):
            return
        if os.path.basename(ipath) == "env" and (name := _env_command(arg)):
            if "/" in name:
                self.run_interpreter(name, self.absolute(name), "#! interpreter", tpath, depth)
                return
            rule = "#! interpreter (env PATH)"
            for d in DEFAULT_PATH:
                cand = f"{d}/{name}"
                hit = self.fs.lookup(cand)
                if hit and stat.S_ISREG(hit[1].st_mode) and hit[1].st_mode & 0o111:
                    self.run_interpreter(name, cand, rule, tpath, depth)
                    return
            tried = [Attempt(f"{d}/{name}", rule, "absent") for d in DEFAULT_PATH]
            self.miss(name, tpath, "not found in PATH " + ":".join(DEFAULT_PATH), tried)

    def run_interpreter(self, name: str, ipath: str, rule: str, by: str, depth: int) -> bool:
        hit = self.fs.lookup(ipath)
        if hit is None or not stat.S_ISREG(hit[1].st_mode):
            result = "absent" if hit is None else "not a regular file"
            self.miss(name, by, None, [Attempt(ipath, rule, result)])
            return False
        real, st = hit
        self.record(name, ipath, real, rule, by)
        try:
            head = read_head(real, SHEBANG_BYTES)
        except OSError as e:
            self.miss(name, by, f"cannot read: {e.strerror or e}")
            return False
        self.execute(ipath, real, st, head, depth=depth + 1)
        return True

    # -- one program --------------------------------------------------------------------------

    def program(self, tpath: str, real: str, facts: Facts) -> None:
        interp_hit = None
        if facts.interpreter:
            interp_hit = self.fs.lookup(self.absolute(facts.interpreter))
        model = self.model_for(tpath, facts, interp_hit[0] if interp_hit else None)
        soname = facts.dynamic.soname if facts.dynamic else None
        main = LoadedObject(
            path=tpath,
            realpath=real,
            identity=None,
            facts=facts,
            loader=None,
            names={soname} if soname else set(),
            origin=os.path.dirname(self.fs.target(real)),
            is_main=True,
        )
        loaded = [main]
        if facts.interpreter:
            ipath = self.absolute(facts.interpreter)
            if interp_hit is None:
                self.miss(facts.interpreter, tpath, None, [Attempt(ipath, "interpreter", "absent")])
            else:
                ireal, ist = interp_hit
                try:
                    ifacts = read_facts(ireal, ist)
                except BadObject as e:
                    self.miss(facts.interpreter, tpath, str(e))
                else:
                    isoname = ifacts.dynamic.soname if ifacts.dynamic else None
                    loaded.append(
                        LoadedObject(
                            path=ipath,
                            realpath=ireal,
                            identity=(ist.st_dev, ist.st_ino),
                            facts=ifacts,
                            loader=None,
                            names={facts.interpreter} | ({isoname} if isoname else set()),
                            origin=os.path.dirname(ipath),
                        )
                    )
                    self.record(facts.interpreter, ipath, ireal, "interpreter", tpath)
        if facts.dynamic is None:
            return  # statically linked: the kernel starts it directly
        main.queued = True
        queue = deque([main])
        while queue:
            obj = queue.popleft()
            for raw in obj.dyn.needed:
                name = self.ld.expand(raw, obj, model)
                dep = next((o for o in loaded if o.answers_to(name)), None)
                if dep is None:
                    dep = self.load(raw, name, obj, main, loaded, model)
                if dep is not None and not dep.queued:
                    dep.queued = True
                    queue.append(dep)

    def load(
        self,
        raw: str,
        name: str,
        req: LoadedObject,
        main: LoadedObject,
        loaded: list[LoadedObject],
        model: LoaderModel,
    ) -> LoadedObject | None:
        found = self.ld.search(name, req, main, model)
        if isinstance(found, str):
            tried: list[Attempt] = []
            self.ld.search(name, req, main, model, tried)  # again, noting each place looked at
            self.miss(raw, req.path, found if found != "not found" else None, tried)
            return None
        for o in loaded:
            if o.identity == found.identity:
                o.names.add(name)  # same file under another name: ld.so reuses the object
                self.record(raw, found.path, found.realpath, found.rule, req.path)
                return o
        obj = LoadedObject(
            path=found.path,
            realpath=found.realpath,
            identity=found.identity,
            facts=found.facts,
            loader=req,
            names={name},
            origin=os.path.dirname(found.path),
        )
        loaded.append(obj)
        self.record(raw, found.path, found.realpath, found.rule, req.path)
        return obj

    # -- searching ---------------------------------------------------------------------------

    def closure(self) -> Closure:
        return Closure(
            inputs=list(self.inputs),
            libraries=[rec.freeze() for rec in self.libs.values()],
            missing=list(self.missing),
            reasons=dict(self.reasons),
            tried=dict(self.tried),
            by_input=list(self.by_input),
            bits=self.model.bits if self.model is not None else None,
        )


def _env_command(arg: str) -> str | None:
    """The program ``env`` runs for a ``#!/usr/bin/env ARG`` line."""
    words = arg.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-u", "-C", "--unset", "--chdir"):
            i += 2
            continue
        if w.startswith("-") or "=" in w:
            i += 1
            continue
        return w
    return None


def resolve(
    inputs: Sequence[str],
    *,
    root: str | None = None,
    library_path: Sequence[str] = (),
    use_ld_cache: bool = True,
) -> Closure:
    """The closure ld.so would load for each input, merged (each real file listed once).

    ``root`` makes every path resolve inside that directory; ``library_path`` acts like
    LD_LIBRARY_PATH (entries may use $ORIGIN etc., relative to the program). Raises UserError
    for unusable inputs or inputs of different ELF classes or machines; missing libraries are
    reported in the result (see ``Closure.raise_if_missing``).
    """
    walker = _Walker(root, library_path, use_ld_cache)
    for arg in inputs:
        walker.add_input(arg)
    return walker.closure()
