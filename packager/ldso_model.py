"""The ld.so being emulated: Debian's glibc 2.36 loader for one ELF class and machine, on this CPU.

Which system directories it searches, what ``$LIB`` and ``$PLATFORM`` expand to, which
glibc-hwcaps and legacy hwcap subdirectories it tries in each directory, and which ld.so.cache
entries it accepts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from rewriter.elf import EM_386, EM_X86_64

from .ldcache import FIRST_PLATFORM_BIT, FLAG_ELF, FLAG_ELF_LIBC6, FLAGS_X86_64, U64, CacheSelector

_X86_PLATFORMS = ("i586", "i686", "haswell", "xeon_phi")  # glibc's legacy platform bits
_HWCAP_NAMES = ("sse2", "x86_64", "avx512_1")  # glibc's legacy x86 hwcap bits, in bit order


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
