"""The tests' own views of ELF files: pyelftools, and lief as a third view.

The rewriter's ElfFile is code under test, so the proof tests read layouts through the libraries
the project was specified with instead: program headers (PT_LOAD), section headers and their
names (``read_elf``, pyelftools); ``lief_elf`` reads the same facts with lief, and ``facts``
gives the whole comparable picture (segments, sections, dynamic table, symbols) both ways.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import lief
from elftools.elf import enums
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

lief.logging.disable()

PAGE = 0x1000
PT_LOAD = 1
SHT_PROGBITS = 1
SHF_ALLOC_EXEC = 0x2 | 0x4


@dataclass(frozen=True, slots=True)
class Load:
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True, slots=True)
class Sec:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int


@dataclass(frozen=True)
class Elf:
    bits: int
    machine: int
    loads: tuple[Load, ...]
    sections: tuple[Sec, ...]

    @property
    def texts(self) -> list[Sec]:
        return [
            s
            for s in self.sections
            if s.type == SHT_PROGBITS and s.flags & SHF_ALLOC_EXEC == SHF_ALLOC_EXEC
        ]

    def bytes_at(self, data: bytes, vaddr: int, size: int) -> bytes:
        off = self.offset_of(vaddr, size)
        return data[off : off + size]

    def offset_of(self, vaddr: int, size: int = 1) -> int:
        """File offset of ``vaddr`` through the PT_LOAD that holds its file bytes."""
        for p in self.loads:
            if p.vaddr <= vaddr and vaddr + size <= p.vaddr + p.filesz:
                return p.offset + (vaddr - p.vaddr)
        raise AssertionError(f"{vaddr:#x} is not backed by file bytes")

    def vaddr_of(self, offset: int) -> int:
        """The address at which the PT_LOAD holding file ``offset`` maps it."""
        for p in self.loads:
            if p.offset <= offset < p.offset + p.filesz:
                return p.vaddr + (offset - p.offset)
        raise AssertionError(f"file offset {offset:#x} is not loaded")

    @property
    def blob_vaddr(self) -> int:
        """Reference §2.1: the page-aligned end of the highest PT_LOAD."""
        return align(max(p.vaddr + p.memsz for p in self.loads), PAGE)


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _pyelftools(data: bytes) -> ELFFile:
    return ELFFile(io.BytesIO(data))


def read_elf(data: bytes) -> Elf:
    """Program and section headers through pyelftools."""
    assert data[:4] == b"\x7fELF" and data[4] in (1, 2) and data[5] == 1, "ELF LE expected"
    ef = _pyelftools(data)
    loads = tuple(
        Load(h.p_flags, h.p_offset, h.p_vaddr, h.p_filesz, h.p_memsz)
        for h in (s.header for s in ef.iter_segments())
        if h.p_type == "PT_LOAD"
    )
    secs = tuple(
        Sec(s.name, _raw_type(s.header.sh_type), s.header.sh_flags, s.header.sh_addr,
            s.header.sh_offset, s.header.sh_size)
        for s in ef.iter_sections()
    )  # fmt: skip
    return Elf(ef.elfclass, _machine(ef.header.e_machine), loads, secs)


def _number(enum: dict[str, Any], value: str | int) -> int:
    """pyelftools spells known values as names; the views compare numbers."""
    return value if isinstance(value, int) else int(enum[value])


_SHT = {**enums.ENUM_SH_TYPE_BASE, **enums.ENUM_SH_TYPE_AMD64}


def _raw_type(t: str | int) -> int:
    return _number(_SHT, t)


def _machine(m: str | int) -> int:
    return _number(enums.ENUM_E_MACHINE, m)


def lief_elf(data: bytes) -> Elf:
    """The same facts as ``read_elf``, through lief."""
    b = lief.ELF.parse(list(data))
    assert b is not None, "lief cannot parse the file"
    loads = tuple(
        Load(int(s.flags), s.file_offset, s.virtual_address, s.physical_size, s.virtual_size)
        for s in b.segments
        if s.type == lief.ELF.Segment.TYPE.LOAD
    )
    secs = tuple(
        Sec(s.name, int(s.type), int(s.flags), s.virtual_address, s.file_offset, s.size)
        for s in b.sections
    )
    bits = 64 if b.header.identity_class == lief.ELF.Header.CLASS.ELF64 else 32
    return Elf(bits, int(b.header.machine_type), loads, secs)


def facts(data: bytes, library: str) -> dict[str, Any]:
    """Segments, sections, dynamic table and symbols as one library reads them, comparable
    across files (and, for the same file, across libraries)."""
    if library == "pyelftools":
        ef = _pyelftools(data)
        segs = [
            (_number(enums.ENUM_P_TYPE_BASE, h.p_type), h.p_offset, h.p_vaddr, h.p_filesz,
             h.p_memsz, h.p_flags)
            for h in (s.header for s in ef.iter_segments())
        ]  # fmt: skip
        dyn: list[tuple[int, int]] = []
        syms: list[tuple[str, int, int]] = []
        for sec in ef.iter_sections():
            if isinstance(sec, DynamicSection):
                dyn += [(_number(enums.ENUM_D_TAG, t.entry.d_tag), t.entry.d_val)
                        for t in sec.iter_tags()]  # fmt: skip
            elif isinstance(sec, SymbolTableSection):
                syms += [(s.name, s["st_value"], s["st_size"]) for s in sec.iter_symbols()]
        view = read_elf(data)
    else:
        b = lief.ELF.parse(list(data))
        assert b is not None
        segs = [
            (int(s.type), s.file_offset, s.virtual_address, s.physical_size, s.virtual_size,
             int(s.flags))
            for s in b.segments
        ]  # fmt: skip
        dyn = [(int(e.tag), e.value) for e in b.dynamic_entries]
        syms = [(s.name, s.value, s.size) for s in b.symtab_symbols]
        syms += [(s.name, s.value, s.size) for s in b.dynamic_symbols]
        view = lief_elf(data)
    return {
        "segments": segs,
        "sections": [(s.name, s.type, s.flags, s.addr, s.offset, s.size) for s in view.sections],
        "dynamic": dyn,
        "symbols": sorted(syms),
    }
