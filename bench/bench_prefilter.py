"""The byte-level pre-filter of rel32 branch targets (issue 10's lever), measured and rejected.

Run: python bench/bench_prefilter.py [FILE...]

The rewriter reads every instruction's near-branch target during its sweep, because a strategy
must know whether an instruction it moves is a branch target. The pre-filter would read targets
only near the syscall windows (rel8 reach) and at the byte positions whose E8/E9 or 0F 8x rel32
lands in a window, leaving plain sync decoding elsewhere. This compares, in one process:

* "target reads": what the sweep spends reading every target (the same sweep with and without);
* "byte scan": the cheapest exact scan found in pure Python (one ``translate``, ``split`` on the
  opcode classes, then ``accumulate``/``map``/``compress`` over the candidates, no Python loop).

The scan costs about as much as the reads it would remove: every candidate byte still passes
through several C-level calls, and libc has ~48,000 of them against ~330,000 instructions. So the
rewriter keeps reading every target; a vectorised scan (numpy, or C) would be needed to win.
"""

from __future__ import annotations

import bisect
import operator
import struct
import sys
import time
from collections.abc import Callable
from itertools import accumulate, compress, repeat
from pathlib import Path

from bench_rewrite import own_sweep  # the same sweep bench_rewrite times (bench/ is on the path)
from iced_x86 import Decoder
from rich.table import Table

from packager.console import console
from rewriter import ElfFile
from rewriter.sweep import find_pairs

LIB = "/usr/lib/x86_64-linux-gnu"
DEFAULT = [f"{LIB}/libc.so.6", f"{LIB}/ld-linux-x86-64.so.2", f"{LIB}/libcrypto.so.3"]
ROUNDS = 7
MARGIN = 5 + 13  # the window the strategies ask about: a jump's length, and prefixes
# E8/E9 -> 1; 0F -> 2, 80..8F -> 3: one translate gives "01" for call/jmp, "02 03" for jcc
CLASSES = bytes(
    1 if b in (0xE8, 0xE9) else 2 if b == 0x0F else 3 if 0x80 <= b <= 0x8F else 0
    for b in range(256)
)
REL32 = struct.Struct("<i").unpack_from
FIRST, ADD = operator.itemgetter(0), operator.add


def byte_scan(code: bytes, base: int, wanted: set[int]) -> tuple[int, int]:
    """(candidates, hits): the E8/E9 and 0F 8x positions, and those whose rel32 target is in
    ``wanted`` (addresses)."""
    # With q the offset just after the opcode, the target is base + q + 4 + rel32(q).
    shifted = {a - base - 4 for a in wanted}
    classes = code.translate(CLASSES)
    candidates = hits = 0
    for opcode in (b"\x01", b"\x02\x03"):
        pieces = classes.split(opcode)
        after = list(accumulate(map(ADD, map(len, pieces[:-1]), repeat(len(opcode)))))
        del after[bisect.bisect_right(after, len(code) - 4) :]
        rels = map(FIRST, map(REL32, repeat(code), after))
        hits += len(list(compress(after, map(shifted.__contains__, map(ADD, rels, after)))))
        candidates += len(after)
    return candidates, hits


def best(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(data: bytes) -> tuple[int, int, int, float, float]:
    """(instructions, candidates, hits, target reads s, byte scan s) of one file."""
    elf = ElfFile(data)
    texts = elf.text_sections
    codes = [data[s.offset : s.offset + s.size] for s in texts]
    wanted = {
        a
        for code, s in zip(codes, texts, strict=True)
        for p in find_pairs(code)
        for a in range(s.addr + p - MARGIN, s.addr + p + 2 + MARGIN)
    }

    def scan() -> list[tuple[int, int]]:
        return [byte_scan(c, s.addr, wanted) for c, s in zip(codes, texts, strict=True)]

    reads = plain = scanned = float("inf")
    for _ in range(ROUNDS):  # interleaved, so all see the same machine state
        reads = min(reads, best(lambda: own_sweep(data, elf, True)))
        plain = min(plain, best(lambda: own_sweep(data, elf, False)))
        scanned = min(scanned, best(scan))
    counts = scan()
    insns = sum(sum(1 for _ in Decoder(64, code)) for code in codes)
    return insns, sum(c for c, _ in counts), sum(h for _, h in counts), reads - plain, scanned


def main(argv: list[str]) -> int:
    if any(a.startswith("-") for a in argv):
        print(__doc__)
        return 0 if set(argv) <= {"-h", "--help"} else 2
    table = Table(title=f"rel32 pre-filter against reading every target (best of {ROUNDS})")
    for col in ("file", "instructions", "candidates", "hits", "target reads ms", "byte scan ms"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for path in argv or DEFAULT:
        if not Path(path).is_file():
            print(f"bench_prefilter: {path}: not a readable file", file=sys.stderr)
            return 2
        insns, candidates, hits, reads, scanned = measure(Path(path).read_bytes())
        table.add_row(
            Path(path).name,
            f"{insns:,}",
            f"{candidates:,}",
            f"{hits:,}",
            f"{reads * 1e3:.1f}",
            f"{scanned * 1e3:.1f}",
        )
    console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
