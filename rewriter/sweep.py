"""Linear-sweep decoding of x86-64 text sections, done cheaply.

The rewriter needs two things from a sweep: every direct branch target (in all text sections),
and the instructions around each real ``syscall``. Materialising every instruction is what makes a
Python rewriter slow, so the sweep only keeps instruction objects in small windows around the byte
pairs ``0F 05``; elsewhere it reads one attribute per instruction.

Cutting the byte stream at a window edge must not change the decode: an instruction that the cut
truncates comes back as invalid with ``NO_MORE_BYTES`` and is decoded again in full, so the result
equals one uninterrupted sweep. Upstream decodes sections larger than 8 MiB in 8 MiB chunks
(instructions starting at a chunk end are dropped and decoding restarts exactly there, with 14
bytes of look-ahead for the straddling one); that rule is reproduced here for byte parity.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from iced_x86 import Decoder, DecoderError, Instruction

CHUNK = 0x800000
CHUNK_LOOKAHEAD = 14
MAX_INSN = 15
# Three instructions of up to 15 bytes each, plus prefixes before 0F 05: enough to hold every
# instruction a backward or forward scan can borrow.
WINDOW = 64
SYSCALL = b"\x0f\x05"


def find_pairs(code: bytes) -> list[int]:
    """Offsets of every ``0F 05`` byte pair (candidates; most are real syscalls)."""
    out = []
    i = code.find(SYSCALL)
    while i >= 0:
        out.append(i)
        i = code.find(SYSCALL, i + 1)
    return out


@dataclass
class SectionSweep:
    """Instruction runs around candidate sites; each run is contiguous in the linear sweep."""

    runs: list[list[Instruction]] = field(default_factory=list)


def _limit(pos: int, size: int) -> int:
    """Last byte an instruction starting at ``pos`` may use (chunk look-ahead, section end)."""
    chunk_end = (pos // CHUNK + 1) * CHUNK
    return min(size, chunk_end + CHUNK_LOOKAHEAD) if chunk_end < size else size


def _boundaries(size: int, pairs: list[int]) -> list[tuple[int, int, bool]]:
    """Split [0, size) into (start, stop, detailed) segments; chunk ends are always boundaries."""
    windows: list[list[int]] = []
    for p in pairs:
        lo, hi = max(0, p - WINDOW), min(size, p + 2 + WINDOW)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], hi)
        else:
            windows.append([lo, hi])
    points = {0, size, *range(CHUNK, size, CHUNK)}
    for lo, hi in windows:
        points.update((lo, hi))
    cuts = sorted(points)
    out = []
    wi = 0
    for a, b in itertools.pairwise(cuts):
        while wi < len(windows) and windows[wi][1] <= a:
            wi += 1
        detailed = wi < len(windows) and windows[wi][0] <= a < windows[wi][1]
        out.append((a, b, detailed))
    return out


def sweep_section(code: bytes, base: int, targets: set[int]) -> SectionSweep:
    """Decode one text section: add every near-branch target to ``targets`` and return the
    instruction runs around each ``0F 05`` pair."""
    size = len(code)
    result = SectionSweep()
    pairs = find_pairs(code)
    pos = 0
    run: list[Instruction] | None = None
    for _start, stop, detailed in _boundaries(size, pairs):
        if pos < stop:
            if detailed:
                if run is None:
                    run = []
                    result.runs.append(run)
                pos = _decode_detailed(code, base, pos, stop, targets, run)
            else:
                run = None
                pos = _decode_fast(code, base, pos, stop, targets)
        if stop % CHUNK == 0 and stop < size:
            pos = stop  # upstream restarts decoding exactly at every 8 MiB chunk end
    return result


def _decode_fast(code: bytes, base: int, pos: int, stop: int, targets: set[int]) -> int:
    dec = Decoder(64, code[pos:stop], ip=base + pos)
    add = targets.add
    insn = None
    for insn in dec:
        t = insn.near_branch_target
        if t:
            add(t)
    if insn is None or dec.last_error != DecoderError.NO_MORE_BYTES:
        return stop
    # The cut truncated the last instruction: decode it again with the bytes it may really use.
    at = insn.ip - base
    full = Decoder(64, code[at : min(at + MAX_INSN, _limit(at, len(code)))], ip=insn.ip).decode()
    if full.near_branch_target:
        add(full.near_branch_target)
    return at + full.len


def _decode_detailed(
    code: bytes, base: int, pos: int, stop: int, targets: set[int], run: list[Instruction]
) -> int:
    end = min(stop + MAX_INSN, _limit(pos, len(code)))
    dec = Decoder(64, code[pos:end], ip=base + pos)
    stop_ip = base + stop
    for insn in dec:
        if insn.ip >= stop_ip:
            break
        run.append(insn)
        t = insn.near_branch_target
        if t:
            targets.add(t)
        pos = insn.next_ip - base
    return pos
