"""Linear-sweep decoding of x86-64 text sections, done cheaply.

The rewriter needs two things from a sweep: every direct branch target (in all text sections),
and the instructions around each real ``syscall``. Materialising every instruction is what makes a
Python rewriter slow, so the sweep only keeps instruction objects in small windows around the byte
pairs ``0F 05``; elsewhere it reads one attribute per instruction.

Cutting the byte stream at a window edge must not change the decode: an instruction that the cut
truncates comes back as invalid with ``NO_MORE_BYTES`` and is decoded again in full, so the result
equals one uninterrupted sweep. Upstream decodes sections larger than 8 MiB in 8 MiB chunks
(instructions starting at a chunk end are dropped and decoding restarts exactly there, with 14
bytes of look-ahead for the straddling one); that rule is reproduced here, but only when byte
parity with upstream is asked for (``chunked``): an immediate that straddles a chunk end would
otherwise be read as instructions, and a ``0F 05`` inside it patched as a syscall.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from dataclasses import dataclass, field

from iced_x86 import Code, Decoder, DecoderError, Instruction

CHUNK = 0x800000
CHUNK_LOOKAHEAD = 14
MAX_INSN = 15
# Room for three instructions of up to 15 bytes on each side of a syscall: the most a backward
# or forward scan can borrow (it succeeds by the third instruction, each at least 1 byte long).
REACH = 3 * 15 + 1
# Fast segments are decoded in pieces of at most this many bytes: the decoder copies what it is
# given, and a whole 100 MB text section would otherwise be copied twice at once.
PIECE = 1 << 20
SYSCALL = b"\x0f\x05"
_SYSCALL = Code.SYSCALL
_NEAR_BRANCH_TARGET = operator.attrgetter("near_branch_target")


def find_pairs(data: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets (from ``start``) of every ``0F 05`` pair in ``data[start:end]`` (candidates;
    most are real syscalls)."""
    end = len(data) if end is None else end
    out = []
    i = data.find(SYSCALL, start, end)
    while i >= 0:
        out.append(i - start)
        i = data.find(SYSCALL, i + 1, end)
    return out


@dataclass
class SectionSweep:
    """Instruction runs around candidate pairs, and the syscalls found in them.

    Each run is contiguous in the linear sweep; ``sites`` holds (run, index) for every real
    ``syscall`` instruction, in address order.
    """

    runs: list[list[Instruction]] = field(default_factory=list)
    sites: list[tuple[list[Instruction], int]] = field(default_factory=list)


PREFIXES = frozenset(b"\x26\x2e\x36\x3e\x64\x65\x66\x67\xf0\xf2\xf3" + bytes(range(0x40, 0x50)))


def _possible_starts(code: SectionBytes, pair: int) -> range:
    """Where a syscall instruction whose opcode is the pair at ``pair`` can start: at the pair,
    or earlier when prefix bytes precede it (only those instructions get their opcode checked)."""
    start = pair
    while start > 0 and pair - start < MAX_INSN - 2 and code[start - 1] in PREFIXES:
        start -= 1
    return range(start, pair + 1)


def _limit(pos: int, size: int, chunked: bool) -> int:
    """Last byte an instruction starting at ``pos`` may use (chunk look-ahead, section end)."""
    if not chunked:
        return size
    chunk_end = (pos // CHUNK + 1) * CHUNK
    return min(size, chunk_end + CHUNK_LOOKAHEAD) if chunk_end < size else size


def _boundaries(
    size: int, spans: list[tuple[int, int]], chunked: bool
) -> list[tuple[int, int, bool]]:
    """Split [0, size) into (start, stop, detailed) segments: detailed around each candidate
    ``(first possible start, pair)``; with ``chunked``, chunk ends are always boundaries."""
    windows: list[list[int]] = []
    for first, p in spans:
        lo, hi = max(0, first - REACH), min(size, p + 2 + REACH)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], hi)
        else:
            windows.append([lo, hi])
    points = {0, size, *(range(CHUNK, size, CHUNK) if chunked else ())}
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


# A section's bytes; a memoryview avoids copying the whole section.
SectionBytes = bytes | memoryview


def sweep_section(
    code: SectionBytes,
    base: int,
    targets: set[int] | None,
    pairs: list[int] | None = None,
    *,
    chunked: bool = False,
) -> SectionSweep:
    """Decode one text section and return the instruction runs around each ``0F 05`` pair.

    With a ``targets`` set, every near-branch target is added to it (one attribute read per
    instruction, which costs as much as decoding it; 0, iced's "no target", may be added too
    and the caller discards it); without, the sweep only keeps sync, which is enough to tell whether
    any candidate pair is a real syscall. ``chunked`` applies upstream's 8 MiB chunk rule.
    """
    size = len(code)
    result = SectionSweep()
    if pairs is None:
        pairs = find_pairs(bytes(code))
    starts = [_possible_starts(code, p) for p in pairs]
    probe = {base + start for r in starts for start in r}
    pos = 0
    run: list[Instruction] | None = None
    spans = [(r.start, p) for r, p in zip(starts, pairs, strict=True)]
    for _start, stop, detailed in _boundaries(size, spans, chunked):
        if pos < stop:
            if detailed:
                if run is None:
                    run = []
                    result.runs.append(run)
                pos = _decode_detailed(
                    code, base, pos, stop, targets, run, probe, result.sites, chunked
                )
            else:
                run = None
                while stop - pos > PIECE:
                    pos = _decode_fast(code, base, pos, pos + PIECE, targets, finish=False)
                chunk_end = chunked and stop % CHUNK == 0 and stop < size
                pos = _decode_fast(code, base, pos, stop, targets, finish=chunk_end)
        if chunked and stop % CHUNK == 0 and stop < size:
            pos = stop  # upstream restarts decoding exactly at every 8 MiB chunk end
    return result


def _decode_fast(
    code: SectionBytes, base: int, pos: int, stop: int, targets: set[int] | None, *, finish: bool
) -> int:
    """Decode [pos, stop) keeping only branch targets; return where decoding must resume.

    When the cut truncates the last instruction, resume at its start (the next, detailed
    segment decodes it in full), unless ``finish`` asks for it to be decoded here: at a chunk
    end, where decoding restarts at the boundary whatever the straddling instruction was.
    """
    dec = Decoder(64, bytes(code[pos:stop]), ip=base + pos)
    insn = None
    if targets is None:
        tail = deque(dec, maxlen=1)  # consumes the decoder without a Python-level loop
        insn = tail[0] if tail else None
    else:
        # Iterating the decoder beats decode_out into one reused Instruction here: measured
        # 66 ms against 94 ms for libc's sweep, the method call costs more than the allocation.
        add = targets.add
        for insn in dec:
            t = insn.near_branch_target  # 0 for non-branches: skipping the add saves ~5%
            if t:
                add(t)
    if insn is None or dec.last_error != DecoderError.NO_MORE_BYTES:
        return stop
    at = insn.ip - base
    if not finish:
        return at
    piece = bytes(code[at : min(at + MAX_INSN, _limit(at, len(code), True))])
    full = Decoder(64, piece, ip=insn.ip).decode()
    if targets is not None and full.near_branch_target:
        targets.add(full.near_branch_target)
    return at + full.len


def _decode_detailed(
    code: SectionBytes,
    base: int,
    pos: int,
    stop: int,
    targets: set[int] | None,
    run: list[Instruction],
    probe: set[int],
    sites: list[tuple[list[Instruction], int]],
    chunked: bool,
) -> int:
    end = min(stop + MAX_INSN, _limit(pos, len(code), chunked))
    dec = Decoder(64, bytes(code[pos:end]), ip=base + pos)
    stop_ip = base + stop
    first = len(run)
    for insn in dec:
        ip = insn.ip
        if ip >= stop_ip:
            break
        if ip in probe and insn.code == _SYSCALL:
            sites.append((run, len(run)))
        run.append(insn)
    if targets is not None:
        targets.update(map(_NEAR_BRANCH_TARGET, run[first:]))
    return run[-1].next_ip - base if len(run) > first else pos
