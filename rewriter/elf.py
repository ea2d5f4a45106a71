"""A small, bounds-checked ELF reader: the facts the rewriter and the dependency walker need.

It is the project's only ELF reader. It reads little-endian ELF32 and ELF64 and never trusts a
count or an offset: every table is checked against the file before it is read, and every failure
is a ``RewriteError`` with a one-line message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .errors import RewriteError

ELF_MAGIC = b"\x7fELF"

ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_PHDR = 1, 2, 3, 6
PF_X = 1

SHT_PROGBITS, SHT_SYMTAB, SHT_DYNSYM, SHT_NOBITS = 1, 2, 11, 8
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4

STT_FUNC, STT_GNU_IFUNC = 2, 10

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 = 14, 15, 29, 0x6FFFFFFB
DF_1_NODEFLIB = 0x800

MACHINE_NAMES = {EM_386: "i386", EM_X86_64: "x86-64", EM_AARCH64: "aarch64"}


class ElfError(RewriteError):
    """The bytes are not a well-formed ELF file."""


class Segment(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class Section(NamedTuple):
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int

    @property
    def is_text(self) -> bool:
        """Allocated, executable code with file contents (the sections that are scanned)."""
        want = SHF_ALLOC | SHF_EXECINSTR
        return self.type == SHT_PROGBITS and self.flags & want == want


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int
    shndx: int


@dataclass(frozen=True, slots=True)
class DynamicInfo:
    needed: tuple[str, ...]
    soname: str | None
    rpath: str | None
    runpath: str | None
    flags_1: int


def _cstr(data: bytes, offset: int, what: str) -> str:
    if not 0 <= offset < len(data):
        raise ElfError(f"{what} string offset {offset:#x} is outside the file")
    end = data.find(b"\0", offset)
    if end < 0:
        raise ElfError(f"{what} string at {offset:#x} is not terminated")
    return data[offset:end].decode("utf-8", "surrogateescape")


class ElfFile:
    """A parsed view of ELF bytes. Tables are read lazily; headers are validated up front."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 16 or data[:4] != ELF_MAGIC:
            raise ElfError("not an ELF file")
        ei_class, ei_data = data[4], data[5]
        if ei_class not in (1, 2):
            raise ElfError(f"unknown ELF class {ei_class}")
        if ei_data not in (1, 2):
            raise ElfError(f"unknown ELF data encoding {ei_data}")
        self.data = data
        self.is64 = ei_class == 2
        self.little_endian = ei_data == 1
        self._e = "<" if self.little_endian else ">"
        hdr = "HHIQQQIHHHHHH" if self.is64 else "HHIIIIIHHHHHH"
        size = struct.calcsize(self._e + hdr)
        if len(data) < 16 + size:
            raise ElfError("truncated ELF header")
        (
            self.type,
            self.machine,
            _version,
            self.entry,
            self.phoff,
            self.shoff,
            _flags,
            _ehsize,
            self.phentsize,
            self.phnum,
            self.shentsize,
            shnum,
            shstrndx,
        ) = struct.unpack_from(self._e + hdr, data, 16)
        self._shnum_raw = shnum
        self._shstrndx_raw = shstrndx

    # -- helpers -------------------------------------------------------------------------

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"machine {self.machine}")

    @property
    def bits(self) -> int:
        return 64 if self.is64 else 32

    def _table(self, offset: int, count: int, entsize: int, want: int, what: str) -> None:
        if count == 0:
            return
        if entsize < want:
            raise ElfError(f"{what} entry size {entsize} is too small")
        if offset < 0 or offset + count * entsize > len(self.data):
            raise ElfError(f"{what} table ({count} entries at {offset:#x}) extends beyond the file")

    # -- program headers -----------------------------------------------------------------

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        fmt = self._e + ("IIQQQQQQ" if self.is64 else "IIIIIIII")
        want = struct.calcsize(fmt)
        self._table(self.phoff, self.phnum, self.phentsize, want, "program header")
        out = []
        for i in range(self.phnum):
            f = struct.unpack_from(fmt, self.data, self.phoff + i * self.phentsize)
            if self.is64:
                p_type, p_flags, off, vaddr, paddr, filesz, memsz, align = f
            else:
                p_type, off, vaddr, paddr, filesz, memsz, p_flags, align = f
            out.append(Segment(p_type, p_flags, off, vaddr, paddr, filesz, memsz, align))
        return tuple(out)

    @property
    def loads(self) -> list[Segment]:
        return [s for s in self.segments if s.type == PT_LOAD]

    def vaddr_to_offset(self, vaddr: int, size: int = 1) -> int:
        """File offset of ``vaddr`` through the PT_LOAD that maps it from the file."""
        for s in self.loads:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                off = s.offset + (vaddr - s.vaddr)
                if off + size <= len(self.data):
                    return off
        raise ElfError(f"address {vaddr:#x} is not backed by the file")

    @cached_property
    def interpreter(self) -> str | None:
        for s in self.segments:
            if s.type == PT_INTERP:
                if s.offset + s.filesz > len(self.data) or s.filesz == 0:
                    raise ElfError("PT_INTERP extends beyond the file")
                raw = self.data[s.offset : s.offset + s.filesz]
                return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        return None

    # -- section headers -----------------------------------------------------------------

    @cached_property
    def sections(self) -> tuple[Section, ...]:
        if self.shoff == 0:
            return ()
        fmt = self._e + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII")
        want = struct.calcsize(fmt)
        shnum, shstrndx = self._shnum_raw, self._shstrndx_raw
        if shnum == 0 or shstrndx == 0xFFFF:
            # Extended numbering: the real values live in section header 0.
            self._table(self.shoff, 1, self.shentsize, want, "section header")
            zero = struct.unpack_from(fmt, self.data, self.shoff)
            shnum = shnum or zero[5]
            shstrndx = zero[6] if shstrndx == 0xFFFF else shstrndx
        self._table(self.shoff, shnum, self.shentsize, want, "section header")
        if self.shentsize == want:
            raw = list(struct.iter_unpack(fmt, self.data[self.shoff : self.shoff + shnum * want]))
        else:
            raw = [
                struct.unpack_from(fmt, self.data, self.shoff + i * self.shentsize)
                for i in range(shnum)
            ]
        names = b""
        if 0 < shstrndx < shnum:
            _, st_type, _, _, off, size, *_ = raw[shstrndx]
            if st_type != SHT_NOBITS and off + size <= len(self.data):
                names = self.data[off : off + size]
        out = []
        for name, sh_type, flags, addr, off, size, link, _info, _align, entsize in raw:
            if sh_type != SHT_NOBITS and off + size > len(self.data):
                raise ElfError(f"section at {off:#x} (+{size:#x}) extends beyond the file")
            end = names.find(b"\0", name)
            sname = names[name:end].decode("utf-8", "surrogateescape") if end > name else ""
            out.append(Section(sname, sh_type, flags, addr, off, size, link, entsize))
        return tuple(out)

    @property
    def text_sections(self) -> list[Section]:
        return [s for s in self.sections if s.is_text]

    def symbols(self, table: Section, names: Iterable[str] | None = None) -> Iterator[Symbol]:
        """Symbols of a SHT_SYMTAB or SHT_DYNSYM section, optionally only those in ``names``.

        Looking names up by their bytes in the string table first avoids decoding thousands of
        names when only a few symbols are wanted.
        """
        fmt = self._e + ("IBBHQQ" if self.is64 else "IIIBBH")
        want = struct.calcsize(fmt)
        entsize = table.entsize or want
        count = table.size // entsize
        self._table(table.offset, count, entsize, want, "symbol")
        if not 0 <= table.link < len(self.sections):
            raise ElfError("symbol table links to a missing string table")
        strtab = self.sections[table.link]
        if strtab.offset + strtab.size > len(self.data):
            raise ElfError("symbol string table extends beyond the file")
        wanted: dict[int, str] | None = None
        if names is not None:
            blob = self.data[strtab.offset : strtab.offset + strtab.size]
            wanted = {}
            for name in names:
                needle = name.encode() + b"\0"
                i = blob.find(needle)
                while i >= 0:
                    wanted[i] = name
                    i = blob.find(needle, i + 1)
        if wanted is not None:
            # Find the entries by their st_name bytes instead of unpacking every entry.
            end = table.offset + count * entsize
            for name_off, name in wanted.items():
                needle = struct.pack(self._e + "I", name_off)
                at = self.data.find(needle, table.offset, end)
                while at >= 0:
                    if (at - table.offset) % entsize == 0:
                        yield self._symbol(fmt, at, name)
                    at = self.data.find(needle, at + 1, end)
            return
        for i in range(count):
            at = table.offset + i * entsize
            name_off = struct.unpack_from(self._e + "I", self.data, at)[0]
            if name_off < strtab.size:
                yield self._symbol(fmt, at, _cstr(self.data, strtab.offset + name_off, "symbol"))

    def _symbol(self, fmt: str, at: int, name: str) -> Symbol:
        f = struct.unpack_from(fmt, self.data, at)
        if self.is64:
            _, info, _other, shndx, value, size = f
        else:
            _, value, size, info, _other, shndx = f
        return Symbol(name, value, size, info & 0xF, shndx)

    # -- dynamic section -----------------------------------------------------------------

    @cached_property
    def dynamic_entries(self) -> tuple[tuple[int, int], ...] | None:
        """(tag, value) of every PT_DYNAMIC entry before DT_NULL; None without PT_DYNAMIC."""
        dyn = next((s for s in self.segments if s.type == PT_DYNAMIC), None)
        if dyn is None:
            return None
        fmt = self._e + ("qQ" if self.is64 else "iI")
        esz = struct.calcsize(fmt)
        if dyn.offset + dyn.filesz > len(self.data):
            raise ElfError("PT_DYNAMIC extends beyond the file")
        entries: list[tuple[int, int]] = []
        for tag, val in struct.iter_unpack(
            fmt, self.data[dyn.offset : dyn.offset + dyn.filesz // esz * esz]
        ):
            if tag == DT_NULL:
                break
            entries.append((tag, val))
        return tuple(entries)

    @cached_property
    def dynamic(self) -> DynamicInfo | None:
        """DT_NEEDED and friends, read through PT_DYNAMIC as the loader reads them."""
        entries = self.dynamic_entries
        if entries is None:
            return None
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        strsz = next((v for t, v in entries if t == DT_STRSZ), 0)

        def string(val: int) -> str:
            if strtab is None:
                raise ElfError("dynamic section has strings but no DT_STRTAB")
            if val >= strsz:
                raise ElfError(f"dynamic string offset {val:#x} is beyond DT_STRSZ")
            return _cstr(self.data, self.vaddr_to_offset(strtab, strsz) + val, "dynamic")

        def first(tag: int) -> str | None:
            return next((string(v) for t, v in entries if t == tag), None)

        return DynamicInfo(
            needed=tuple(string(v) for t, v in entries if t == DT_NEEDED),
            soname=first(DT_SONAME),
            rpath=first(DT_RPATH),
            runpath=first(DT_RUNPATH),
            flags_1=next((v for t, v in entries if t == DT_FLAGS_1), 0),
        )
