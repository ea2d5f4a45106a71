"""Read and write glibc's ``/etc/ld.so.cache`` without running ldconfig or ld.so.

Layout (glibc 2.32+, all little-endian here):

* optional old block: ``ld.so-1.7.0`` (11 bytes, padded to 12), ``nlibs`` (u32), then ``nlibs``
  12-byte entries ``(flags, key, value)`` whose string offsets count from the end of that table;
* new block (at file start, or 8-aligned after the old block): ``glibc-ld.so.cache1.1``
  (20 bytes), ``nlibs``, ``len_strings``, ``flags`` (u8, endianness), 3 pad bytes,
  ``extension_offset`` (u32, from the file start), 3 unused u32 -- 48 bytes in all -- then
  ``nlibs`` 24-byte entries ``(flags i32, key u32, value u32, osversion u32, hwcap u64)``.
  Their string offsets count from the start of the new block.
* an optional extension directory (magic ``0xEAA42174``, count, 16-byte sections
  ``(tag, flags, offset, size)``): tag 0 names the generator, tag 1 is an array of u32 string
  offsets naming the ``glibc-hwcaps`` subdirectories that entries with bit 62 of ``hwcap``
  refer to by index (low 32 bits; bits 32..41 carry the x86 ISA level the library needs).

ldconfig sorts entries by name in *descending* ``_dl_cache_libcmp`` order (digit runs compare
numerically), hwcaps entries first within a name; ld.so binary-searches that order. The lookup
here reproduces which entry ld.so 2.36 picks for a given loader (see ``CacheSelector``).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UserError

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
OLD_HEADER, OLD_ENTRY = 16, 12
NEW_HEADER, NEW_ENTRY = 48, 24
EXTENSION_MAGIC = 0xEAA42174
EXT_TAG_GENERATOR, EXT_TAG_GLIBC_HWCAPS = 0, 1

# Entry flags: the low byte is the library type, the next one the architecture variant.
FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003
FLAG_X8664_LIB64 = 0x0300
FLAG_X8664_LIBX32 = 0x0800
FLAGS_X86_64 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64

HWCAP_EXTENSION = 1 << 62
HWCAP_TLS = 1 << 63
ISA_LEVEL_MASK = (1 << 10) - 1
FIRST_PLATFORM_BIT = 48
U64 = (1 << 64) - 1

# Endianness values of the new header's flags byte (0 means "not recorded").
_ENDIAN_LITTLE = 2

DEFAULT_CACHE = "/etc/ld.so.cache"


class LdCacheError(UserError):
    """The bytes are not a usable ld.so.cache."""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cache line: ``key`` (the soname looked up) maps to ``value`` (a path)."""

    key: str
    value: str
    flags: int = FLAGS_X86_64
    osversion: int = 0
    hwcap: int = 0
    hwcaps_subdir: str | None = None  # the glibc-hwcaps name an extension entry refers to

    @property
    def is_hwcaps_extension(self) -> bool:
        # Only bit 62 may be set above the ISA level bits; older ld.so versions skip these.
        return (self.hwcap >> 32) & ~ISA_LEVEL_MASK == HWCAP_EXTENSION >> 32

    @property
    def isa_level(self) -> int:
        return (self.hwcap >> 32) & ISA_LEVEL_MASK if self.is_hwcaps_extension else 0


@dataclass(frozen=True)
class CacheSelector:
    """What one particular ld.so accepts from the cache (its class, machine and CPU).

    ``hwcaps_subdirs`` lists the active glibc-hwcaps subdirectories best first; ``isa_levels``
    the x86 ISA levels the CPU has (0 baseline, 1..3 for x86-64-v2..v4); ``hwcap`` the legacy
    hwcap bits the loader considers usable; ``platform_bit`` the legacy platform bit (all ones
    when the platform is not one the loader knows, which rejects every platform entry).
    """

    accepted_flags: frozenset[int]
    default_flags: int
    hwcaps_subdirs: tuple[str, ...] = ()
    isa_levels: frozenset[int] = frozenset({0})
    hwcap: int = 0
    platform_bit: int = U64
    platform_mask: int = 0
    osversion: int = 0  # 0: do not filter on the ABI note version (as ld.so when unknown)

    def priority(self, subdir: str | None) -> int:
        """1 for the best glibc-hwcaps subdirectory, larger for worse ones, 0 for unusable."""
        if subdir in self.hwcaps_subdirs:
            return self.hwcaps_subdirs.index(subdir) + 1
        return 0

    def _usable(self, entry: CacheEntry) -> bool:
        if entry.is_hwcaps_extension:
            return entry.isa_level in self.isa_levels
        exclude = ~(self.hwcap | self.platform_mask | HWCAP_TLS) & U64
        if entry.hwcap & exclude:
            return False
        plat = entry.hwcap & self.platform_mask
        return not (plat and plat != self.platform_bit)


@dataclass(frozen=True)
class LdCache:
    """A parsed cache: entries in file (priority) order."""

    entries: tuple[CacheEntry, ...]
    generator: str | None = None
    _index: dict[str, list[CacheEntry]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for e in self.entries:
            self._index.setdefault(_libcmp_key(e.key), []).append(e)

    def lookup(self, name: str, selector: CacheSelector) -> CacheEntry | None:
        """The entry ld.so would use for ``name``, or None (then it tries the default dirs)."""
        best: CacheEntry | None = None
        best_priority = 0
        for e in self._index.get(_libcmp_key(name), ()):
            if e.flags not in selector.accepted_flags:
                continue
            named = e.is_hwcaps_extension
            if named and not selector._usable(e):
                continue
            # Extension entries are sorted first: once past them, a match so far is final.
            if not named and best is not None:
                break
            if not named and not selector._usable(e):
                continue
            if selector.osversion and e.osversion > selector.osversion:
                continue
            if named:
                prio = selector.priority(e.hwcaps_subdir)
                if prio == 0 or (best is not None and prio >= best_priority):
                    continue
                best_priority = prio
            best = e
            if not named and e.flags == selector.default_flags:
                break
        return best

    def mapping(self, selector: CacheSelector) -> dict[str, str]:
        """name -> path for every name the given loader can find, in cache order."""
        out: dict[str, str] = {}
        for e in self.entries:
            if e.key not in out and (hit := self.lookup(e.key, selector)) is not None:
                out[e.key] = hit.value
        return out


# -- comparison ------------------------------------------------------------------------------


def _signed(b: int) -> int:
    # ld.so compares plain ``char``, which is signed on x86.
    return b - 256 if b > 127 else b


def libcmp(a: str, b: str) -> int:
    """ld.so's cache order: like strcmp, but runs of digits compare as numbers."""
    x, y = os.fsencode(a), os.fsencode(b)
    i = j = 0
    while i < len(x):
        if 48 <= x[i] <= 57:
            if not (j < len(y) and 48 <= y[j] <= 57):
                return 1
            si, sj = i, j
            while i < len(x) and 48 <= x[i] <= 57:
                i += 1
            while j < len(y) and 48 <= y[j] <= 57:
                j += 1
            va, vb = int(x[si:i]), int(y[sj:j])
            if va != vb:
                return -1 if va < vb else 1
            continue
        cy = y[j] if j < len(y) else 0
        if 48 <= cy <= 57:
            return -1
        if x[i] != cy:
            return _signed(x[i]) - _signed(cy)
        i += 1
        j += 1
    return -_signed(y[j]) if j < len(y) else 0


_DIGITS = re.compile(r"[0-9]+")


def _libcmp_key(name: str) -> str:
    # Two names compare equal under libcmp exactly when their digit runs have equal values.
    return _DIGITS.sub(lambda m: str(int(m.group())), name)


# -- reading ---------------------------------------------------------------------------------


def _cstr(data: bytes, offset: int) -> str | None:
    if not 0 <= offset < len(data):
        return None
    end = data.find(b"\0", offset)
    if end < 0:
        return None
    return data[offset:end].decode("utf-8", "surrogateescape")


def _parse_extensions(data: bytes, ext_off: int) -> tuple[str | None, list[str | None]]:
    """The generator string and the glibc-hwcaps names (None where an offset is bad)."""
    if ext_off == 0 or ext_off % 4 or ext_off + 8 > len(data):
        return None, []
    magic, count = struct.unpack_from("<II", data, ext_off)
    if magic != EXTENSION_MAGIC or ext_off + 8 + 16 * count > len(data):
        return None, []
    generator: str | None = None
    hwcaps: list[str | None] = []
    for i in range(count):
        tag, _flags, off, size = struct.unpack_from("<IIII", data, ext_off + 8 + 16 * i)
        if off + size > len(data):
            return None, []
        if tag == EXT_TAG_GENERATOR:
            generator = data[off : off + size].decode("utf-8", "replace")
        elif tag == EXT_TAG_GLIBC_HWCAPS and size and size % 4 == 0 and off % 4 == 0:
            hwcaps = [_cstr(data, o) for (o,) in struct.iter_unpack("<I", data[off : off + size])]
    return generator, hwcaps


def _parse_new(data: bytes, base: int) -> LdCache:
    if len(data) - base < NEW_HEADER:
        raise LdCacheError("truncated ld.so.cache header")
    nlibs, _len_strings, flags, ext_off = struct.unpack_from("<IIB3xI", data, base + 20)
    if flags != 0 and flags & 3 != _ENDIAN_LITTLE:
        raise LdCacheError("ld.so.cache is not little-endian (or is marked invalid)")
    if (len(data) - base - NEW_HEADER) // NEW_ENTRY < nlibs:
        raise LdCacheError(f"ld.so.cache claims {nlibs} entries but is too short")
    generator, hwcaps = _parse_extensions(data, ext_off)
    strings = data[base:]
    entries = []
    for i in range(nlibs):
        e_flags, key, value, osv, hwcap = struct.unpack_from(
            "<iIIIQ", data, base + NEW_HEADER + NEW_ENTRY * i
        )
        k, v = _cstr(strings, key), _cstr(strings, value)
        if k is None or v is None:
            continue  # ld.so verifies each offset and skips what is out of range
        subdir = None
        entry = CacheEntry(k, v, e_flags, osv, hwcap)
        if entry.is_hwcaps_extension:
            idx = hwcap & 0xFFFFFFFF
            subdir = hwcaps[idx] if idx < len(hwcaps) else None
            entry = CacheEntry(k, v, e_flags, osv, hwcap, subdir)
        entries.append(entry)
    return LdCache(tuple(entries), generator)


def parse_ldcache(data: bytes) -> LdCache:
    """Parse a cache file's bytes; ``LdCacheError`` for anything ld.so would also ignore."""
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0)
    if not data.startswith(OLD_MAGIC):
        raise LdCacheError("not an ld.so.cache file (bad magic)")
    if len(data) < OLD_HEADER:
        raise LdCacheError("truncated ld.so.cache header")
    (nold,) = struct.unpack_from("<I", data, 12)
    if (len(data) - OLD_HEADER) // OLD_ENTRY < nold:
        raise LdCacheError(f"ld.so.cache claims {nold} entries but is too short")
    table_end = OLD_HEADER + OLD_ENTRY * nold
    new_at = (table_end + 7) & ~7
    if data[new_at : new_at + len(NEW_MAGIC)] == NEW_MAGIC:
        return _parse_new(data, new_at)
    # Old format only: strings count from the end of the entry table.
    strings = data[table_end:]
    entries = []
    for i in range(nold):
        e_flags, key, value = struct.unpack_from("<iII", data, OLD_HEADER + OLD_ENTRY * i)
        k, v = _cstr(strings, key), _cstr(strings, value)
        if k is not None and v is not None:
            entries.append(CacheEntry(k, v, e_flags))
    return LdCache(tuple(entries))


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, _stamp: tuple[int, int, int, int]) -> LdCache | None:
    try:
        with open(path, "rb") as f:
            return parse_ldcache(f.read())
    except (OSError, LdCacheError):
        return None


def load_ldcache(path: str = DEFAULT_CACHE) -> LdCache | None:
    """The cache at ``path``, or None when it is absent or unusable (ld.so then goes on
    without it). Parsed once per file version."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _load_cached(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


# -- writing ---------------------------------------------------------------------------------


def _compare(a: CacheEntry, b: CacheEntry) -> int:
    # ldconfig's order: names descending, then flags descending, glibc-hwcaps entries first
    # (by subdirectory name), then the most specific legacy hwcap and the newest OS version.
    res = libcmp(b.key, a.key)
    if res:
        return res
    if a.flags != b.flags:
        return -1 if a.flags > b.flags else 1
    if (a.hwcaps_subdir is None) != (b.hwcaps_subdir is None):
        return -1 if a.hwcaps_subdir is not None else 1
    if (
        a.hwcaps_subdir is not None
        and b.hwcaps_subdir is not None
        and a.hwcaps_subdir != b.hwcaps_subdir
    ):
        return -1 if a.hwcaps_subdir < b.hwcaps_subdir else 1
    # Extension entries carry no legacy hwcap bits in ldconfig's model.
    ahw = 0 if a.hwcaps_subdir is not None else a.hwcap
    bhw = 0 if b.hwcaps_subdir is not None else b.hwcap
    for x, y in (
        (bin(ahw).count("1"), bin(bhw).count("1")),
        (ahw, bhw),
        (a.osversion, b.osversion),
    ):
        if x != y:
            return -1 if x > y else 1
    return 0


def build_ldcache(
    entries: Iterable[CacheEntry | tuple[str, str]], *, generator: str | None = None
) -> bytes:
    """A new-format cache (no old block) that ld.so and ``ldconfig -p -C`` read.

    ``(key, value)`` pairs become x86-64 libc6 entries. An entry with ``hwcaps_subdir`` is
    written as a glibc-hwcaps extension entry keeping the ISA level bits of its ``hwcap``.
    """
    from . import __version__

    items = [e if isinstance(e, CacheEntry) else CacheEntry(e[0], e[1]) for e in entries]
    for e in items:
        if e.hwcaps_subdir is None and e.hwcap & HWCAP_EXTENSION:
            raise ValueError(f"{e.key}: glibc-hwcaps entry without a subdirectory name")
    items.sort(key=functools.cmp_to_key(_compare))
    subdirs = sorted({e.hwcaps_subdir for e in items if e.hwcaps_subdir is not None})

    table = NEW_HEADER + NEW_ENTRY * len(items)
    strings = bytearray()
    offsets: dict[str, int] = {}

    def intern(s: str) -> int:
        if s not in offsets:
            offsets[s] = table + len(strings)
            raw = os.fsencode(s)
            strings.extend(raw + b"\0")
            # A key is usually its path's last component: share that tail, as ldconfig does.
            tail = raw.rsplit(b"/", 1)[-1]
            offsets.setdefault(os.fsdecode(tail), table + len(strings) - 1 - len(tail))
        return offsets[s]

    for e in items:  # paths first so that keys can point into them
        intern(e.value)
    packed = bytearray()
    for e in items:
        hwcap = e.hwcap
        if e.hwcaps_subdir is not None:
            level = (e.hwcap >> 32) & ISA_LEVEL_MASK if e.is_hwcaps_extension else 0
            hwcap = HWCAP_EXTENSION | level << 32 | subdirs.index(e.hwcaps_subdir)
        packed += struct.pack("<iIIIQ", e.flags, intern(e.key), intern(e.value), e.osversion, hwcap)
    hwcap_offsets = [intern(s) for s in subdirs]

    ext_off = (table + len(strings) + 3) & ~3
    gen = (generator or f"litebox-pack {__version__}").encode()
    sections = [(EXT_TAG_GENERATOR, gen)]
    if subdirs:
        sections.insert(0, (EXT_TAG_GLIBC_HWCAPS, struct.pack(f"<{len(subdirs)}I", *hwcap_offsets)))
    data_at = ext_off + 8 + 16 * len(sections)
    directory = struct.pack("<II", EXTENSION_MAGIC, len(sections))
    payload = bytearray()
    for tag, blob in sections:
        directory += struct.pack("<IIII", tag, 0, data_at + len(payload), len(blob))
        payload += blob
        payload += b"\0" * (-len(payload) % 4)

    header = NEW_MAGIC + struct.pack(
        "<IIB3xI12x", len(items), len(strings), _ENDIAN_LITTLE, ext_off
    )
    out = bytearray(header)
    out += packed
    out += strings
    out += b"\0" * (ext_off - len(out))
    out += directory
    out += payload
    return bytes(out)
