"""An ELF reader of the tests' own, for ELF64 and ELF32 little-endian files.

The rewriter's ElfFile is code under test, so the proof tests read layouts with this instead:
program headers (PT_LOAD), section headers and their names, nothing more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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

    @property
    def blob_vaddr(self) -> int:
        """Reference §2.1: the page-aligned end of the highest PT_LOAD."""
        return align(max(p.vaddr + p.memsz for p in self.loads), PAGE)


def align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# Per class: header offsets (e_phoff/e_shoff format and place, e_phentsize... place), program
# header layout (type, flags, offset, vaddr, filesz, memsz), section header layout.
_LAYOUT = {
    2: ("<QQ", 32, 54, "<IIQQQQQ", (0, 1, 2, 3, 5, 6), "<IIQQQQ"),
    1: ("<II", 28, 42, "<IIIIIII", (0, 6, 1, 2, 4, 5), "<IIIIII"),
}


def read_elf(data: bytes) -> Elf:
    assert data[:4] == b"\x7fELF" and data[4] in _LAYOUT and data[5] == 1, "ELF LE expected"
    offs_fmt, offs_at, counts_at, ph_fmt, ph_fields, sh_fmt = _LAYOUT[data[4]]
    machine = struct.unpack_from("<H", data, 18)[0]
    phoff, shoff = struct.unpack_from(offs_fmt, data, offs_at)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, counts_at)
    loads = []
    for k in range(phnum):
        raw = struct.unpack_from(ph_fmt, data, phoff + k * phentsize)
        p_type, flags, off, vaddr, filesz, memsz = (raw[i] for i in ph_fields)
        if p_type == PT_LOAD:
            loads.append(Load(flags, off, vaddr, filesz, memsz))
    headers = [struct.unpack_from(sh_fmt, data, shoff + k * shentsize) for k in range(shnum)]
    names_at = headers[shstrndx][4] if shnum else 0
    secs = []
    for name_off, typ, flags, addr, off, size in headers:
        start = names_at + name_off
        name = data[start : data.index(b"\0", start)].decode()
        secs.append(Sec(name, typ, flags, addr, off, size))
    return Elf(64 if data[4] == 2 else 32, machine, tuple(loads), tuple(secs))
