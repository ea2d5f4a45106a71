"""The address ranges that ``.eh_frame`` describes (one per FDE), read without a DWARF library.

Only what the code map needs: each FDE's initial location and its address range. With an
``.eh_frame_hdr`` whose search table has the usual encoding, the table gives every FDE's address
in one ``struct.iter_unpack``; otherwise ``.eh_frame`` is walked record by record. A malformed
record ends the reading with a ``ValueError`` (the caller then has no unwind map).
"""

from __future__ import annotations

import operator
import struct

from .elf import SHT_NOBITS, ElfFile, Section

# DW_EH_PE pointer encodings (LSB, "Exception Frame" of the System V ABI / LSB core spec)
PE_OMIT = 0xFF
PE_ABSPTR, PE_ULEB128, PE_UDATA2, PE_UDATA4, PE_UDATA8 = 0x00, 0x01, 0x02, 0x03, 0x04
PE_SLEB128, PE_SDATA2, PE_SDATA4, PE_SDATA8 = 0x09, 0x0A, 0x0B, 0x0C
PE_PCREL, PE_DATAREL = 0x10, 0x30
_FIXED = {PE_UDATA2: "H", PE_UDATA4: "I", PE_UDATA8: "Q", PE_SDATA2: "h", PE_SDATA4: "i"}
_FIXED[PE_SDATA8] = "q"
HDR_TABLE_ENC = PE_DATAREL | PE_SDATA4  # 0x3b: what binutils and lld write


def _leb(data: bytes, at: int, signed: bool) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("LEB128 runs past the end")
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if signed and b & 0x40:
                value -= 1 << shift
            return value, at
        if shift > 70:
            raise ValueError("LEB128 too long")


class _Reader:
    """Encoded pointers of one section, whose bytes start at vaddr ``base``."""

    def __init__(self, data: bytes, sec: Section, bits: int) -> None:
        if sec.type == SHT_NOBITS:
            raise ValueError(f"{sec.name} has no file bytes")
        self.data = data[sec.offset : sec.offset + sec.size]
        self.base = sec.addr
        self.word = "Q" if bits == 64 else "I"
        self.mask = (1 << bits) - 1

    def pointer(self, at: int, enc: int, datarel: int = 0) -> tuple[int, int]:
        """(value, next position) of the pointer encoded with ``enc`` at position ``at``."""
        fmt = enc & 0x0F
        if fmt in (PE_ULEB128, PE_SLEB128):
            value, nxt = _leb(self.data, at, fmt == PE_SLEB128)
        else:
            code = self.word if fmt == PE_ABSPTR else _FIXED.get(fmt)
            if code is None:
                raise ValueError(f"pointer encoding {enc:#x} is unknown")
            size = struct.calcsize(code)
            if at + size > len(self.data):
                raise ValueError("pointer runs past the end")
            (value,) = struct.unpack_from("<" + code, self.data, at)
            nxt = at + size
        app = enc & 0x70
        if app == PE_PCREL:
            value += self.base + at
        elif app == PE_DATAREL:
            value += datarel
        elif app:
            raise ValueError(f"pointer application {app:#x} is unsupported")
        return value & self.mask, nxt


def _cie_encoding(r: _Reader, at: int) -> int:
    """The FDE pointer encoding ('R' augmentation) of the CIE whose record starts at ``at``."""
    data = r.data
    length, at = _length(data, at)
    at += 4 if length[1] == 4 else 8  # CIE id
    version = data[at]
    aug_end = data.index(b"\0", at + 1)
    aug = data[at + 1 : aug_end]
    at = aug_end + 1
    if b"eh" in aug:
        at += struct.calcsize(r.word)
    _, at = _leb(data, at, False)  # code alignment
    _, at = _leb(data, at, True)  # data alignment
    if version == 1:
        at += 1
    else:
        _, at = _leb(data, at, False)  # return address register
    if not aug.startswith(b"z"):
        return PE_ABSPTR
    _, at = _leb(data, at, False)  # augmentation data length
    for ch in aug[1:]:
        if ch == ord("R"):
            return data[at]
        if ch == ord("P"):
            _, at = r.pointer(at + 1, data[at] & 0x7F)
        elif ch == ord("L"):
            at += 1
        elif ch not in b"SBG":
            break
    return PE_ABSPTR


def _length(data: bytes, at: int) -> tuple[tuple[int, int], int]:
    """((record length, id size), position after the length field)."""
    if at + 4 > len(data):
        raise ValueError("record header runs past the end")
    (n,) = struct.unpack_from("<I", data, at)
    if n == 0xFFFFFFFF:
        if at + 12 > len(data):
            raise ValueError("record header runs past the end")
        (n,) = struct.unpack_from("<Q", data, at + 4)
        return (n, 8), at + 12
    return (n, 4), at + 4


def _fde_range(r: _Reader, at: int, cies: dict[int, int]) -> tuple[int, int] | None:
    """(start, end) of the FDE at position ``at`` (None for a CIE or an empty FDE)."""
    (length, idsize), body = _length(r.data, at)
    if body + length > len(r.data) or length < idsize:
        raise ValueError("record runs past the end of .eh_frame")
    (cie_ptr,) = struct.unpack_from("<I" if idsize == 4 else "<Q", r.data, body)
    if cie_ptr == 0:
        return None
    cie = body - cie_ptr
    if not 0 <= cie < len(r.data):
        raise ValueError("FDE points at no CIE")
    enc = cies.get(cie)
    if enc is None:
        enc = cies[cie] = _cie_encoding(r, cie)
    start, nxt = r.pointer(body + idsize, enc)
    size, _ = r.pointer(nxt, enc & 0x0F)
    return (start, start + size) if size else None


def fde_ranges(elf: ElfFile) -> list[tuple[int, int]] | None:
    """Every FDE's [start, end), sorted; None when the file has no ``.eh_frame``. Raises
    ValueError, and only that, for tables that do not parse."""
    try:
        return _fde_ranges(elf)
    except (IndexError, struct.error) as e:
        raise ValueError(f".eh_frame does not parse: {e}") from None


def _fde_ranges(elf: ElfFile) -> list[tuple[int, int]] | None:
    secs = {s.name: s for s in elf.sections}
    frame = secs.get(".eh_frame")
    if frame is None or frame.size == 0:
        return None
    r = _Reader(elf.data, frame, elf.bits)
    cies: dict[int, int] = {}
    hdr = secs.get(".eh_frame_hdr")
    if hdr is not None and hdr.type != SHT_NOBITS:
        table = _hdr_table(elf.data, hdr, elf.bits)
        if table is not None:
            fast = _from_table(r, frame, table, cies)
            if fast is not None:
                return fast if _ascending(fast) else sorted(fast)
            out = []
            for _loc, fde in table:
                at = fde - frame.addr
                if not 0 <= at < frame.size:
                    raise ValueError(".eh_frame_hdr points outside .eh_frame")
                rng = _fde_range(r, at, cies)
                if rng is not None:
                    out.append(rng)
            out.sort()
            return out
    out = []
    at = 0
    while at + 4 <= frame.size:
        (length, _), body = _length(r.data, at)
        if length == 0:
            break  # the terminator
        rng = _fde_range(r, at, cies)
        if rng is not None:
            out.append(rng)
        at = body + length
    out.sort()
    return out


_HEAD = struct.Struct("<IIiI")  # length, CIE pointer, initial location, address range
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def _from_table(
    r: _Reader, frame: Section, table: list[tuple[int, int]], cies: dict[int, int]
) -> list[tuple[int, int]] | None:
    """The common case in one pass: every FDE has a 4-byte length and a CIE whose pointers are
    4 bytes (pcrel/absolute sdata4/udata4), so its range is the u32 at FDE + 12 and its start
    is the table's initial location. None when any FDE is otherwise (the caller reads each)."""
    offs = [fde - frame.addr for _, fde in table]
    if offs and (min(offs) < 0 or max(offs) + _HEAD.size > len(r.data)):
        raise ValueError(".eh_frame_hdr points outside .eh_frame")
    head = _HEAD.unpack_from
    heads = [head(r.data, o) for o in offs]
    for cie in {o + 4 - h[1] for o, h in zip(offs, heads, strict=True)}:
        if not 0 <= cie < len(r.data):
            raise ValueError("FDE points at no CIE")
        if cie not in cies:
            cies[cie] = _cie_encoding(r, cie)
        if cies[cie] & 0x0F not in (PE_UDATA4, PE_SDATA4) or cies[cie] & 0x70 not in (0, PE_PCREL):
            return None
    if 0xFFFFFFFF in map(_FIRST, heads) or 0 in map(_SECOND, heads):
        return None
    # The table is sorted by initial location (the format requires it), so this stays sorted.
    return [(loc, loc + h[3]) for (loc, _), h in zip(table, heads, strict=True) if h[3]]


def _ascending(ranges: list[tuple[int, int]]) -> bool:
    lows = list(map(_FIRST, ranges))
    return lows == sorted(lows)


def _hdr_table(data: bytes, hdr: Section, bits: int) -> list[tuple[int, int]] | None:
    """The (initial location, FDE address) pairs of ``.eh_frame_hdr``, or None when its table
    is absent or encoded otherwise than the usual datarel sdata4."""
    r = _Reader(data, hdr, bits)
    raw = r.data
    if len(raw) < 4 or raw[0] != 1:
        return None
    ptr_enc, count_enc, table_enc = raw[1], raw[2], raw[3]
    if count_enc == PE_OMIT or table_enc != HDR_TABLE_ENC:
        return None
    _, at = r.pointer(4, ptr_enc)
    count, at = r.pointer(at, count_enc)
    if at + 8 * count > len(raw):
        raise ValueError(".eh_frame_hdr table runs past the end")
    base = hdr.addr
    # No wrap-around to the class's width: a table that needs it points outside .eh_frame,
    # which the caller refuses.
    return [
        (base + loc, base + fde) for loc, fde in struct.iter_unpack("<ii", raw[at : at + 8 * count])
    ]
