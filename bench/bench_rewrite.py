"""Rewrite speed against a bare iced-x86 linear sweep of the same executable sections.

Run: python bench/bench_rewrite.py [FILE...]
All timings are taken in the same process, interleaved, best of N, so the ratio is robust to
the machine's background noise. The rewrite is timed with the data guard (the default: each
site proven to be code, issue 10) and without (--no-data-guard); "proof" is the difference.
"targets" is what the rewriter's own sweep spends reading every instruction's branch target
(the same sweep with and without the target set); bench_prefilter.py measures the byte-level
pre-filter that would replace those reads.
Targets (issues 2 and 10), for the guarded rewrite: libc ≤ 2.5×, python3.11 ≤ 1.5×, files
with no 0F 05 pair ≤ 0.1×.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from iced_x86 import Decoder
from rich.table import Table

from packager.console import console
from rewriter import ElfFile, rewrite_elf
from rewriter.sweep import find_pairs, sweep_section

LIB = "/usr/lib/x86_64-linux-gnu"
DEFAULT = [
    (f"{LIB}/libc.so.6", 2.5),
    (f"{LIB}/ld-linux-x86-64.so.2", None),
    ("/usr/bin/python3.11", 1.5),
    (f"{LIB}/libcrypto.so.3", None),
    (f"{LIB}/libz.so.1", 0.1),
    (f"{LIB}/libexpat.so.1", 0.1),
]
ROUNDS = 7


def bare_sweep(data: bytes, elf: ElfFile) -> None:
    for s in elf.text_sections:
        for _ in Decoder(64, data[s.offset : s.offset + s.size], ip=s.addr):
            pass


def own_sweep(data: bytes, elf: ElfFile, targets: bool) -> None:
    view = memoryview(data)
    found: set[int] | None = set() if targets else None
    for s in elf.text_sections:
        sweep_section(view[s.offset : s.offset + s.size], s.addr, found)


MIN_SAMPLE = 0.005  # seconds: a rewrite of a file with no pair takes ~0.1 ms, below the noise


def best(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    """The best time of one call over ``rounds`` samples, each repeating ``fn`` for at least
    MIN_SAMPLE so that sub-millisecond calls are not lost in timer and scheduler noise."""
    t = time.perf_counter()
    fn()
    reps = max(1, int(MIN_SAMPLE / max(time.perf_counter() - t, 1e-7)))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t) / reps)
    return min(times)


def main(argv: list[str]) -> int:
    if any(a.startswith("-") for a in argv):
        print(__doc__)
        return 0 if set(argv) <= {"-h", "--help"} else 2
    files = [(p, None) for p in argv] or DEFAULT
    unreadable = [p for p, _ in files if not Path(p).is_file()]
    if unreadable:
        print(f"bench_rewrite: {unreadable[0]}: not a readable file", file=sys.stderr)
        return 2
    table = Table(title=f"rewrite vs bare iced sweep (best of {ROUNDS})")
    for col in (
        "file",
        "exec bytes",
        "0F05 pairs",
        "sites",
        "sweep ms",
        "rewrite ms",
        "unguarded ms",
        "proof ms",
        "targets ms",
        "ratio",
        "target",
        "ok",
    ):
        table.add_column(col, justify="left" if col == "file" else "right")
    failed = False
    for path, target in files:
        data = Path(path).read_bytes()
        elf = ElfFile(data)
        texts = elf.text_sections
        exec_bytes = sum(s.size for s in texts)
        pairs = sum(len(find_pairs(data[s.offset : s.offset + s.size])) for s in texts)
        result = rewrite_elf(data)
        sweep_s = rewrite_s = plain_s = with_s = without_s = float("inf")
        for _ in range(ROUNDS):  # interleave so all see the same machine state
            sweep_s = min(sweep_s, best(lambda d=data, e=elf: bare_sweep(d, e), 1))
            rewrite_s = min(rewrite_s, best(lambda d=data: rewrite_elf(d), 1))
            plain_s = min(plain_s, best(lambda d=data: rewrite_elf(d, data_guard=False), 1))
            with_s = min(with_s, best(lambda d=data, e=elf: own_sweep(d, e, True), 1))
            without_s = min(without_s, best(lambda d=data, e=elf: own_sweep(d, e, False), 1))
        ratio = rewrite_s / sweep_s
        ok = "" if target is None else ("yes" if ratio <= target else "NO")
        failed |= ok == "NO"
        table.add_row(
            Path(path).name,
            f"{exec_bytes:,}",
            str(pairs),
            str(result.patched_sites),
            f"{sweep_s * 1e3:.1f}",
            f"{rewrite_s * 1e3:.1f}",
            f"{plain_s * 1e3:.1f}",
            f"{(rewrite_s - plain_s) * 1e3:+.1f}",
            f"{(with_s - without_s) * 1e3:.1f}" if pairs else "",
            f"{ratio:.2f}x",
            "" if target is None else f"≤ {target}x",
            ok,
        )
    console().print(table)  # piped: as wide as the table, no name cut to fit 80 columns
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
