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

Not modelled: LD_PRELOAD, secure-mode (setuid) restrictions, DT_FILTER/DT_AUXILIARY filtees,
the ABI-note OS version check, dlopen(). For i386 the default directories are those of
Debian's multiarch libc6:i386 (/lib/i386-linux-gnu, /usr/lib/i386-linux-gnu, /lib, /usr/lib);
a program whose interpreter is the biarch libc6-i386 build (its compiled-in search path names
/usr/lib32, wherever the file sits) searches /lib32 and /usr/lib32 first.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import re
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rewriter.elf import (
    DF_1_NODEFLIB,
    EM_386,
    EM_X86_64,
    ET_DYN,
    ET_EXEC,
    MACHINE_NAMES,
    DynamicInfo,
    ElfError,
    ElfFile,
)

from .errors import UserError
from .ldcache import (
    DEFAULT_CACHE,
    FIRST_PLATFORM_BIT,
    FLAG_ELF,
    FLAG_ELF_LIBC6,
    FLAGS_X86_64,
    U64,
    CacheSelector,
    LdCache,
    load_ldcache,
)

# What env(1) sees when the runtime environment does not say otherwise (Debian's default).
DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MAX_SYMLINKS = 40  # the kernel's limit before ELOOP
MAX_SCRIPT_DEPTH = 4  # nested #! interpreters the kernel follows
HEAD_BYTES = 64 * 1024  # enough for the headers and .dynstr of almost every object
SHEBANG_BYTES = 256  # the kernel's BINPRM_BUF_SIZE

_X86_PLATFORMS = ("i586", "i686", "haswell", "xeon_phi")  # glibc's legacy platform bits
_HWCAP_NAMES = ("sse2", "x86_64", "avx512_1")  # glibc's legacy x86 hwcap bits, in bit order


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
    """Some libraries cannot be found; the message lists each with the object needing it."""

    def __init__(self, missing: Sequence[tuple[str, str]]) -> None:
        self.missing = tuple(missing)
        listed = ", ".join(f"{name} (needed by {by})" for name, by in self.missing)
        n = len(self.missing)
        super().__init__(f"{n} missing librar{'y' if n == 1 else 'ies'}: {listed}")


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
    by_input: list[InputClosure] = field(default_factory=list)  # parallel to ``inputs``
    bits: int | None = None  # ELF class of the programs (None when no input is an ELF program)

    def raise_if_missing(self) -> None:
        if self.missing:
            raise MissingLibrariesError(self.missing)

    @property
    def realpaths(self) -> set[str]:
        """Host paths of every real file the loader opens for the inputs (inputs included)."""
        return {lib.realpath for lib in (*self.inputs, *self.libraries)}

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [lib.to_json() for lib in self.inputs],
            "libraries": [lib.to_json() for lib in self.libraries],
            "missing": [
                {"name": name, "needed_by": by, "reason": self.reasons.get((name, by), "not found")}
                for name, by in self.missing
            ],
        }


# -- paths inside a root ---------------------------------------------------------------------


def confined_realpath(root: str, path: str) -> str:
    """Host path of target ``path`` with every symlink resolved inside ``root``.

    Absolute link targets restart at ``root``; ``..`` never climbs above it. Components that do
    not exist are kept as written (like ``os.path.realpath(strict=False)``). Raises OSError
    (ELOOP) after too many links.
    """
    root = root.rstrip("/") or "/"
    pending = deque(p for p in path.split("/") if p)
    done: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(host).st_mode)
        except OSError:
            is_link = False
        if not is_link:
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(host)
        if target.startswith("/"):
            done = []
        pending.extendleft(reversed([p for p in target.split("/") if p]))
    return os.path.join(root, *done)


class _Fs:
    """The target's file system: the host's, or a directory tree standing in for it."""

    def __init__(self, root: str | None) -> None:
        self.root = os.path.realpath(root) if root is not None else None
        self._dirs: dict[str, str] = {}

    def host(self, tpath: str) -> str:
        """Host path of the real file (or directory) the target path leads to."""
        if self.root is None:
            return os.path.realpath(tpath)
        head, tail = tpath.rsplit("/", 1) if "/" in tpath else ("", tpath)
        hdir = self._dirs.get(head)
        if hdir is None:
            hdir = self._dirs[head] = confined_realpath(self.root, head)
        if tail in ("", ".", ".."):
            return confined_realpath(self.root, tpath)
        candidate = os.path.join(hdir, tail)
        try:
            if not stat.S_ISLNK(os.lstat(candidate).st_mode):
                return candidate
        except OSError:
            return candidate
        return confined_realpath(self.root, self.target(hdir) + "/" + tail)

    def target(self, host: str) -> str:
        """The target's view of a host path inside the root."""
        if self.root is None or self.root == "/":
            return host
        if host == self.root:
            return "/"
        return host[len(self.root) :] if host.startswith(self.root + "/") else host

    def lookup(self, tpath: str) -> tuple[str, os.stat_result] | None:
        """(host real path, stat) of what ``tpath`` names, or None when nothing is there."""
        try:
            if self.root is None:
                st = os.stat(tpath)  # cheap rejection before the realpath walk
                return os.path.realpath(tpath), st
            host = self.host(tpath)
            return host, os.stat(host)
        except OSError:
            return None


# -- the loader being emulated ---------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    vendor: str
    flags: frozenset[str]

    @staticmethod
    @functools.cache
    def host() -> CpuInfo:
        vendor, flags = "", frozenset[str]()
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key == "vendor_id" and not vendor:
                        vendor = value.strip()
                    elif key == "flags":
                        flags = frozenset(value.split())
                        break
        except OSError:
            pass  # no CPU information: only the baseline is assumed
        return CpuInfo(vendor, flags)

    def has(self, *names: str) -> bool:
        return all(n in self.flags for n in names)

    def x86_64_levels(self) -> int:
        """Highest x86-64 micro-architecture level (1 = baseline .. 4 = x86-64-v4)."""
        # /proc/cpuinfo spells SSE3 "pni" and LZCNT "abm".
        steps = (
            ("cx16", "lahf_lm", "popcnt", "pni", "ssse3", "sse4_1", "sse4_2"),
            ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
            ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
        )
        level = 1
        for needed in steps:
            if not self.has(*needed):
                break
            level += 1
        return level


@dataclass(frozen=True)
class LoaderModel:
    """The ld.so a program of one class and machine gets, on this CPU."""

    bits: int
    machine: int
    system_dirs: tuple[str, ...]  # each with a trailing "/", as ld.so stores them
    lib: str  # $LIB
    platform: str  # $PLATFORM
    subdirs: tuple[str, ...]  # per search directory, best first; "" (the directory) last
    cache: CacheSelector

    @property
    def name(self) -> str:
        return f"ELF{self.bits} {'x86-64' if self.machine == EM_X86_64 else 'i386'}"


def _legacy_subdirs(hwcaps: Sequence[str], platform: str) -> list[str]:
    # glibc's power set of (hwcap names..., platform, "tls"): the subset with every element
    # first, the empty one (the directory itself) last, names joined last-element-first.
    parts = [*hwcaps, platform, "tls"]
    out: list[str] = []
    for mask in range((1 << len(parts)) - 1, -1, -1):
        chosen = [parts[i] for i in range(len(parts) - 1, -1, -1) if mask >> i & 1]
        sub = "".join(p + "/" for p in chosen)
        if sub not in out:
            out.append(sub)
    return out


def loader_model(bits: int, machine: int, cpu: CpuInfo, *, lib32: bool = False) -> LoaderModel:
    """The search rules of Debian's glibc 2.36 ld.so for ``bits``/``machine`` on ``cpu``."""
    intel = cpu.vendor == "GenuineIntel"
    if bits == 64 and machine == EM_X86_64:
        hwcap = 1 << 1  # x86_64
        platform = "x86_64"  # AT_PLATFORM; glibc renames it on Intel CPUs only
        if intel and cpu.has("avx512f", "avx512cd"):
            if cpu.has("avx512er"):
                if cpu.has("avx512pf"):
                    platform = "xeon_phi"
            elif cpu.has("avx512bw", "avx512dq", "avx512vl"):
                hwcap |= 1 << 2  # avx512_1
        if (
            intel
            and platform == "x86_64"
            and cpu.has("avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "popcnt")
        ):
            platform = "haswell"
        level = cpu.x86_64_levels()
        hwcaps = tuple(f"x86-64-v{n}" for n in range(level, 1, -1))
        known = _X86_PLATFORMS[2:4]
        selector = CacheSelector(
            accepted_flags=frozenset({FLAGS_X86_64}),
            default_flags=FLAGS_X86_64,
            hwcaps_subdirs=hwcaps,
            isa_levels=frozenset(range(level)),
            hwcap=hwcap,
            platform_bit=(
                1 << (FIRST_PLATFORM_BIT + _X86_PLATFORMS.index(platform))
                if platform in known
                else U64
            ),
            platform_mask=((1 << 4) - 1) << FIRST_PLATFORM_BIT,
        )
        triplet = "x86_64-linux-gnu"
    elif bits == 32 and machine == EM_386:
        hwcap = 1 if cpu.has("sse2") else 0
        platform = "i686"
        hwcaps = ()  # glibc 2.36 has no glibc-hwcaps levels for i386
        selector = CacheSelector(
            accepted_flags=frozenset({FLAG_ELF, FLAG_ELF_LIBC6}),
            default_flags=FLAG_ELF_LIBC6,
            hwcap=hwcap,
            platform_bit=1 << (FIRST_PLATFORM_BIT + 1),
            platform_mask=((1 << 2) - 1) << FIRST_PLATFORM_BIT,
        )
        triplet = "i386-linux-gnu"
    else:
        raise ValueError(f"no loader model for ELF{bits} machine {machine}")
    names = [n for i, n in enumerate(_HWCAP_NAMES) if hwcap >> i & 1]
    system = [f"/lib/{triplet}/", f"/usr/lib/{triplet}/", "/lib/", "/usr/lib/"]
    lib = f"lib/{triplet}"
    if lib32:
        system[:0] = ["/lib32/", "/usr/lib32/"]
        lib = "lib32"
    return LoaderModel(
        bits=bits,
        machine=machine,
        system_dirs=tuple(system),
        lib=lib,
        platform=platform,
        subdirs=(*(f"glibc-hwcaps/{h}/" for h in hwcaps), *_legacy_subdirs(names, platform)),
        cache=selector,
    )


# -- reading objects -------------------------------------------------------------------------


class _BadObject(Exception):
    """ld.so would refuse this file with the given reason."""


@dataclass(frozen=True)
class _Facts:
    is64: bool
    machine: int
    type: int
    little_endian: bool
    interpreter: str | None
    dynamic: DynamicInfo | None

    @property
    def bits(self) -> int:
        return 64 if self.is64 else 32


def _parse_elf(data: bytes) -> _Facts:
    elf = ElfFile(data)
    return _Facts(elf.is64, elf.machine, elf.type, elf.little_endian, elf.interpreter, elf.dynamic)


@functools.lru_cache(maxsize=8192)
def _facts_cached(host: str, _identity: tuple[int, int, int, int]) -> _Facts | str:
    """Facts of an ELF file, or the reason it is not one. Keyed by the file's identity."""
    try:
        with open(host, "rb") as f:
            data = f.read(HEAD_BYTES)
            if len(data) < 4 or data[:4] != b"\x7fELF":
                return "invalid ELF header" if len(data) >= 64 else "file too short"
            try:
                return _parse_elf(data)
            except ElfError:
                if os.fstat(f.fileno()).st_size <= len(data):
                    raise
            # Headers or strings lie past the first block: map the whole file (only the pages
            # the parser touches are read, so a 100 MB library costs little) and retry.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as whole:
                return _parse_elf(whole)  # type: ignore[arg-type]
    except ElfError as e:
        return f"corrupt ELF file: {e}"
    except OSError as e:
        return f"cannot read file data: {e.strerror or e}"


def _facts(host: str, st: os.stat_result) -> _Facts:
    if stat.S_ISDIR(st.st_mode):
        raise _BadObject("cannot read file data: Is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise _BadObject("not a regular file")  # never open a FIFO or a device
    got = _facts_cached(host, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    if isinstance(got, str):
        raise _BadObject(got)
    return got


@functools.lru_cache(maxsize=64)
def _built_for_lib32(interp_host: str) -> bool:
    """Is this i386 loader the biarch build whose system directories are /lib32 and /usr/lib32?

    Decided from the loader's own bytes (its compiled-in search path), not from where it sits:
    in a bundle the loader is a plain file at its PT_INTERP path (/lib/ld-linux.so.2).
    """
    try:
        with open(interp_host, "rb") as f:
            return b"\0/usr/lib32/\0" in f.read(4 << 20)
    except OSError:
        return False


def _read_head(host: str, limit: int) -> bytes:
    with open(host, "rb") as f:
        return f.read(limit)


# -- the walk --------------------------------------------------------------------------------


_DST = re.compile(r"\$(?:\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?![A-Za-z0-9_]))")


@dataclass(eq=False)
class _Obj:
    """A loaded object of one program (ld.so's link_map)."""

    path: str  # l_name: the target path it was opened by ("" never: we keep the input path)
    realpath: str
    identity: tuple[int, int] | None  # None for the program: ld.so records none for it
    facts: _Facts
    loader: _Obj | None
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
        return (not self.is_main and name == self.path) or name in self.names


@dataclass
class _Rec:
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


@dataclass(frozen=True)
class _Found:
    path: str
    realpath: str
    identity: tuple[int, int]
    facts: _Facts
    rule: str

    def ruled(self, rule: str) -> _Found:
        return _Found(self.path, self.realpath, self.identity, self.facts, rule)


class _Miss(Enum):
    ABSENT = "absent"
    OTHER_ARCH = "another class or machine"


class _Walker:
    def __init__(self, root: str | None, library_path: Sequence[str], use_ld_cache: bool) -> None:
        if root is not None and not os.path.isdir(root):
            raise UserError(f"{root}: --root is not a directory")
        self.fs = _Fs(root)
        self.cwd = "/" if root is not None else os.getcwd()
        self.library_path = list(library_path)
        self.use_ld_cache = use_ld_cache
        self.model: LoaderModel | None = None
        self.model_from = ""
        self._cache: LdCache | bool | None = False  # False: not loaded yet
        self._probes: dict[str, _Found | str | _Miss] = {}
        self.inputs: list[Library] = []
        self.by_input: list[InputClosure] = []
        self.libs: dict[str, _Rec] = {}
        self.missing: list[tuple[str, str]] = []
        self.reasons: dict[tuple[str, str], str] = {}

    # -- helpers ----------------------------------------------------------------------------

    def absolute(self, path: str) -> str:
        return path if path.startswith("/") else os.path.join(self.cwd, path)

    def ldcache(self) -> LdCache | None:
        if self._cache is False:
            if self.fs.root is None:
                self._cache = load_ldcache(DEFAULT_CACHE)
            else:
                self._cache = load_ldcache(self.fs.host(DEFAULT_CACHE))
        return self._cache if isinstance(self._cache, LdCache) else None

    def record(self, name: str, path: str, real: str, rule: str, needed_by: str | None) -> None:
        mine = self.by_input[-1].libraries
        if all(lib.realpath != real for lib in mine):
            mine.append(Library(name, path, real, rule, needed_by))
        rec = self.libs.get(real)
        if rec is None:
            self.libs[real] = _Rec(name, path, real, rule, needed_by)
        elif path != rec.path and path not in rec.aliases:
            rec.aliases.append(path)

    def miss(self, name: str, needed_by: str, reason: str | None = None) -> None:
        key = (name, needed_by)
        if key not in self.by_input[-1].missing:
            self.by_input[-1].missing.append(key)
        if key not in self.missing:
            self.missing.append(key)
            if reason:
                self.reasons[key] = reason

    def model_for(self, tpath: str, facts: _Facts, interp_host: str | None) -> LoaderModel:
        if (facts.bits, facts.machine) not in ((64, EM_X86_64), (32, EM_386)):
            machine = MACHINE_NAMES.get(facts.machine, f"machine {facts.machine}")
            raise UserError(
                f"{tpath}: ELF{facts.bits} {machine} programs are not supported "
                "(x86-64 and i386 only)"
            )
        if self.model is None:
            lib32 = interp_host is not None and _built_for_lib32(interp_host)
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
            head = _read_head(real, SHEBANG_BYTES)
        except OSError as e:
            raise UserError(f"{arg}: cannot read: {e.strerror or e}") from None
        if head.startswith(b"\x7fELF"):
            try:
                _facts(real, st)
            except _BadObject as e:
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
                facts = _facts(real, st)
            except _BadObject as e:
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
            for d in DEFAULT_PATH:
                cand = f"{d}/{name}"
                hit = self.fs.lookup(cand)
                if hit and stat.S_ISREG(hit[1].st_mode) and hit[1].st_mode & 0o111:
                    self.run_interpreter(name, cand, "#! interpreter (env PATH)", tpath, depth)
                    return
            self.miss(name, tpath, "not found in PATH " + ":".join(DEFAULT_PATH))

    def run_interpreter(self, name: str, ipath: str, rule: str, by: str, depth: int) -> bool:
        hit = self.fs.lookup(ipath)
        if hit is None or not stat.S_ISREG(hit[1].st_mode):
            self.miss(name, by)
            return False
        real, st = hit
        self.record(name, ipath, real, rule, by)
        try:
            head = _read_head(real, SHEBANG_BYTES)
        except OSError as e:
            self.miss(name, by, f"cannot read: {e.strerror or e}")
            return False
        self.execute(ipath, real, st, head, depth=depth + 1)
        return True

    # -- one program --------------------------------------------------------------------------

    def program(self, tpath: str, real: str, facts: _Facts) -> None:
        interp_hit = None
        if facts.interpreter:
            interp_hit = self.fs.lookup(self.absolute(facts.interpreter))
        model = self.model_for(tpath, facts, interp_hit[0] if interp_hit else None)
        soname = facts.dynamic.soname if facts.dynamic else None
        main = _Obj(
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
                self.miss(facts.interpreter, tpath)
            else:
                ireal, ist = interp_hit
                try:
                    ifacts = _facts(ireal, ist)
                except _BadObject as e:
                    self.miss(facts.interpreter, tpath, str(e))
                else:
                    isoname = ifacts.dynamic.soname if ifacts.dynamic else None
                    loaded.append(
                        _Obj(
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
                name = self.expand(raw, obj, model)
                dep = next((o for o in loaded if o.answers_to(name)), None)
                if dep is None:
                    dep = self.load(raw, name, obj, main, loaded, model)
                if dep is not None and not dep.queued:
                    dep.queued = True
                    queue.append(dep)

    def load(
        self, raw: str, name: str, req: _Obj, main: _Obj, loaded: list[_Obj], model: LoaderModel
    ) -> _Obj | None:
        found = self.search(name, req, main, model)
        if isinstance(found, str):
            self.miss(raw, req.path, found if found != "not found" else None)
            return None
        for o in loaded:
            if o.identity == found.identity:
                o.names.add(name)  # same file under another name: ld.so reuses the object
                self.record(raw, found.path, found.realpath, found.rule, req.path)
                return o
        obj = _Obj(
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

    def expand(self, text: str, obj: _Obj, model: LoaderModel) -> str:
        values = {"ORIGIN": obj.origin, "PLATFORM": model.platform, "LIB": model.lib}
        return _DST.sub(lambda m: values[m.group(1) or m.group(2)], text)

    def dirs(self, spec: str | Sequence[str], obj: _Obj, model: LoaderModel) -> list[str]:
        """A search path as ld.so stores it: expanded, one trailing "/", no duplicates.

        An empty element means the current directory; one that expands to nothing is dropped.
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

    def probe(self, tpath: str, model: LoaderModel) -> _Found | str | _Miss:
        """A candidate file: usable (a _Found whose rule is unset), absent or skipped (_Miss),
        or refused with a reason that stops the search (str), as ld.so's open_verify."""
        if tpath in self._probes:
            return self._probes[tpath]
        result: _Found | str | _Miss
        hit = self.fs.lookup(tpath)
        if hit is None:
            result = _Miss.ABSENT
        else:
            real, st = hit
            try:
                facts = _facts(real, st)
            except _BadObject as e:
                result = f"{tpath}: {e}"
            else:
                # ld.so's order: another class is skipped, a foreign byte order is an error,
                # another machine is skipped again.
                if facts.bits != model.bits:
                    result = _Miss.OTHER_ARCH
                elif not facts.little_endian:
                    result = f"{tpath}: ELF file data encoding not little-endian"
                elif facts.machine != model.machine:
                    result = _Miss.OTHER_ARCH
                elif facts.type not in (ET_DYN, ET_EXEC):
                    result = f"{tpath}: only ET_DYN and ET_EXEC can be loaded"
                else:
                    result = _Found(tpath, real, (st.st_dev, st.st_ino), facts, "")
        self._probes[tpath] = result
        return result

    def try_dirs(
        self, name: str, dirs: Sequence[str], rule: str, model: LoaderModel, skipped: list[bool]
    ) -> _Found | str | None:
        for d in dirs:
            for sub in model.subdirs:
                got = self.probe(self.absolute(d + sub + name), model)
                if isinstance(got, _Miss):
                    skipped[0] |= got is _Miss.OTHER_ARCH
                    continue
                if isinstance(got, str):
                    return got
                return got.ruled(f"{rule} ({sub.rstrip('/')})" if sub else rule)
        return None

    def search_path(
        self, req: _Obj, main: _Obj, model: LoaderModel
    ) -> Iterator[tuple[list[str], str]]:
        """The directory lists searched before ld.so.cache, in order, with their rule."""
        if req.dyn.runpath is None:
            did_main = False
            obj: _Obj | None = req
            while obj is not None:
                if dirs := self.rpath_of(obj, model):
                    yield dirs, f"DT_RPATH of {obj.path}"
                    did_main |= obj is main
                obj = obj.loader
            if not did_main and (dirs := self.rpath_of(main, model)):
                yield dirs, f"DT_RPATH of {main.path}"
        if self.library_path:
            if main.llp_dirs is None:
                main.llp_dirs = self.dirs(self.library_path, main, model)
            yield main.llp_dirs, "--library-path"
        if req.dyn.runpath:
            if req.runpath_dirs is None:
                req.runpath_dirs = self.dirs(req.dyn.runpath, req, model)
            yield req.runpath_dirs, "DT_RUNPATH"

    def rpath_of(self, obj: _Obj, model: LoaderModel) -> list[str]:
        # An object with DT_RUNPATH contributes no DT_RPATH, not even to its dependents.
        if obj.rpath_dirs is None:
            rpath = obj.dyn.rpath if obj.dyn.runpath is None else None
            obj.rpath_dirs = self.dirs(rpath, obj, model) if rpath else []
        return obj.rpath_dirs

    def search(self, name: str, req: _Obj, main: _Obj, model: LoaderModel) -> _Found | str:
        """Where ld.so finds ``name`` for ``req``, or why it does not."""
        if "/" in name:
            got = self.probe(self.absolute(name), model)
            if isinstance(got, _Found):
                return got.ruled("path in DT_NEEDED")
            return got if isinstance(got, str) else "not found"
        skipped = [False]
        for dirs, rule in self.search_path(req, main, model):
            if (found := self.try_dirs(name, dirs, rule, model, skipped)) is not None:
                return found
        if self.use_ld_cache and (cache := self.ldcache()) is not None:
            entry = cache.lookup(name, model.cache)
            # With DF_1_NODEFLIB, entries under a default directory are ignored (by prefix).
            if entry is not None and not (
                req.nodeflib and entry.value.startswith(model.system_dirs)
            ):
                got = self.probe(self.absolute(entry.value), model)
                if isinstance(got, str):
                    return got
                if isinstance(got, _Found):
                    sub = entry.hwcaps_subdir
                    return got.ruled("ld.so.cache" + (f" (glibc-hwcaps/{sub})" if sub else ""))
                skipped[0] |= got is _Miss.OTHER_ARCH
        if not req.nodeflib:
            found = self.try_dirs(name, model.system_dirs, "default directory", model, skipped)
            if found is not None:
                return found
        if skipped[0]:
            return "not found (a file of another ELF class or machine was skipped)"
        return "not found"

    def closure(self) -> Closure:
        return Closure(
            inputs=list(self.inputs),
            libraries=[rec.freeze() for rec in self.libs.values()],
            missing=list(self.missing),
            reasons=dict(self.reasons),
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
