"""Build tiny x86-64 ELF executables around a code blob, for vectors and fuzzing.

Layout: one PT_LOAD (R+X) mapping the whole file at 0x400000, the code at file offset 0x1000
(vaddr 0x401000), then .shstrtab and the section headers. As long as the file stays under
0x2000 bytes the trampoline lands at 0x402000, the address the reference vectors use.
"""

from __future__ import annotations

import struct

BASE = 0x400000
CODE_OFFSET = 0x1000
CODE_VADDR = BASE + CODE_OFFSET
SLOT = 0x402000


def tiny_elf(code: bytes, *, entry: int = CODE_VADDR, e_type: int = 2) -> bytes:
    shstrtab = b"\0.text\0.shstrtab\0"
    text_end = CODE_OFFSET + len(code)
    shstr_off = text_end
    shoff = (shstr_off + len(shstrtab) + 7) // 8 * 8
    total = shoff + 3 * 64
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack("<HHIQQQIHHHHHH", e_type, 62, 1, entry, 64, shoff, 0, 64, 56, 1, 64, 3, 2)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, total, total, 0x1000)
    out = bytearray(total)
    out[0:64] = ehdr
    out[64 : 64 + 56] = phdr
    out[CODE_OFFSET:text_end] = code
    out[shstr_off : shstr_off + len(shstrtab)] = shstrtab
    sh = bytes(64)
    sh += struct.pack("<IIQQQQIIQQ", 1, 1, 6, CODE_VADDR, CODE_OFFSET, len(code), 0, 0, 16, 0)
    sh += struct.pack("<IIQQQQIIQQ", 7, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    out[shoff:total] = sh
    return bytes(out)


def code_of(elf: bytes, size: int) -> bytes:
    """The first ``size`` code bytes of an ELF made by ``tiny_elf`` (after rewriting too)."""
    return elf[CODE_OFFSET : CODE_OFFSET + size]
