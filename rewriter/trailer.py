"""The LITEBOX0 trailer at the end of a rewritten ELF (reference §1.2-1.5).

64-bit form: magic, file_offset, vaddr, trampoline_size as u64 LE (32 bytes).
32-bit form: magic, then the three fields as u32 LE (20 bytes).
A trailer with size 0 (offset and vaddr 0 too) is the header-only marker: "checked, nothing
to patch".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

MAGIC = b"LITEBOX0"
MAGIC_PREFIX = MAGIC[:7]
PAGE = 0x1000

_FORMS = {64: ("<8sQQQ", 32, 1 << 64), 32: ("<8sIII", 20, 1 << 32)}


@dataclass(frozen=True, slots=True)
class Trailer:
    file_offset: int
    vaddr: int
    size: int
    bits: int = 64

    @property
    def is_marker(self) -> bool:
        return self.size == 0

    def pack(self) -> bytes:
        fmt, _, _ = _FORMS[self.bits]
        return struct.pack(fmt, MAGIC, self.file_offset, self.vaddr, self.size)


class TrailerState(Enum):
    ABSENT = "absent"  # no LITEBOX magic: an unpatched file
    VALID = "valid"
    BAD_VERSION = "bad version byte"  # LITEBOX prefix, other version byte
    INVALID = "invalid"  # magic right, fields inconsistent


@dataclass(frozen=True, slots=True)
class TrailerCheck:
    state: TrailerState
    trailer: Trailer | None = None
    problem: str = ""


def trailer_size(bits: int = 64) -> int:
    """Bytes of the trailer at the end of an ELF of this class."""
    return _FORMS[bits][1]


def check_trailer(data: bytes, bits: int = 64) -> TrailerCheck:
    """Read the trailer the way LiteBox's loader does, saying exactly what is wrong with it."""
    return check_trailer_tail(data[-trailer_size(bits) :], len(data), bits)


def check_trailer_tail(tail: bytes, length: int, bits: int = 64) -> TrailerCheck:
    """``check_trailer`` of a file of ``length`` bytes from its last ``trailer_size(bits)``
    bytes alone, for files too large to read whole."""
    fmt, hsize, limit = _FORMS[bits]
    if length < hsize or len(tail) != hsize:
        return TrailerCheck(TrailerState.ABSENT)
    magic, offset, vaddr, size = struct.unpack(fmt, tail)
    if magic != MAGIC:
        if magic[:7] == MAGIC_PREFIX:
            return TrailerCheck(TrailerState.BAD_VERSION, problem=f"version byte {magic[7]:#04x}")
        return TrailerCheck(TrailerState.ABSENT)
    t = Trailer(offset, vaddr, size, bits)
    if size == 0:
        return TrailerCheck(TrailerState.VALID, t)
    problem = ""
    if offset % PAGE:
        problem = f"file offset {offset:#x} is not page aligned"
    elif vaddr % PAGE:
        problem = f"vaddr {vaddr:#x} is not page aligned"
    elif offset + size != length - hsize:
        problem = f"offset {offset:#x} + size {size:#x} does not end at the trailer"
    elif vaddr + size >= limit:
        problem = "vaddr + size overflows"
    if problem:
        return TrailerCheck(TrailerState.INVALID, t, problem)
    return TrailerCheck(TrailerState.VALID, t)


def read_trailer(data: bytes, bits: int = 64) -> Trailer | None:
    """The valid trailer of ``data``, or None when there is none (or it is malformed)."""
    c = check_trailer(data, bits)
    return c.trailer if c.state is TrailerState.VALID else None
