"""Evidence that a syscall site found by the linear sweep is code, not data that decodes as code.

A linear sweep decodes every byte of an executable section, so bytes of a table stored in
``.text`` can come out as a ``syscall`` (libcrypto's P-256 table does). Patching those bytes
corrupts the table. A site counts as code when any of these holds:

1. it lies in an FDE's range (``.eh_frame``) or in a function symbol's [value, value + size);
2. it is reached from a known code entry by fall-through, direct branches and direct calls.

(1) is cheap (sorted intervals and one bisect per site) and covers almost every site. (2) runs
only for the few sites (1) leaves, and only in the gap between covered intervals around each:
the gap is entered by falling off the end of the covered code before it, from an entry inside
it (ELF entry, symbol, ``DT_INIT``/``DT_FINI`` and their arrays, PLT entries, relocation
targets), or from code elsewhere: a direct branch, or an address taken (a signal restorer's).
That last kind needs the source instruction, which the rewriter's sweep does not keep; a second
sweep that records sources runs only when a gap is still not entered after the cheap checks
(in practice: files that do have data in their text, and i386 libc's signal restorers).

A section whose code the map hardly describes (less than half its bytes covered, e.g. a
stripped file without ``.eh_frame``) gets no verdicts: every site there is patched, as before,
and the outcome says so ("no code map").
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import operator
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from iced_x86 import (
    Code,
    Decoder,
    FlowControl,
    Instruction,
    Mnemonic,
    OpCodeInfo,
    OpCodeOperandKind,
    OpKind,
    Register,
    RegisterExt,
)

from .elf import (
    SHT_DYNSYM,
    SHT_NOBITS,
    SHT_SYMTAB,
    STT_FUNC,
    STT_GNU_IFUNC,
    ElfError,
    ElfFile,
    Section,
)
from .result import DataInCode, RewriteResult, marker_result
from .unwind import fde_ranges

SHT_RELA, SHT_REL, SHT_RELR = 4, 9, 19
DT_INIT, DT_FINI, DT_INIT_ARRAY, DT_FINI_ARRAY = 12, 13, 25, 26
DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ, DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ = 27, 28, 32, 33
# RELATIVE and IRELATIVE carry the target in the addend; the symbolic kinds point at a symbol.
RELATIVE = {64: (8, 37), 32: (8, 42)}
SYMBOLIC = {64: (1, 6, 7), 32: (1, 6, 7)}
PLT_SECTIONS = (".plt", ".plt.sec", ".plt.got", ".iplt")
PLT_ENTRY = 16
MIN_COVERAGE = 0.5  # below this share of a section's bytes, its map is too thin to judge by
TAKEN_REACH = 8  # instructions walked straight on from an address that code takes
WATCH = 6  # instructions after an address is taken in which a dereference marks it as data
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_FUNC_TYPES = frozenset((STT_FUNC, STT_GNU_IFUNC))
_LEA = frozenset((Code.LEA_R32_M, Code.LEA_R64_M))
_MOV_IMM = frozenset((Code.MOV_R32_IMM32, Code.MOV_RM32_IMM32, Code.MOV_RM64_IMM32))
_WRITES_OP0 = frozenset(
    (Mnemonic.MOV, Mnemonic.LEA, Mnemonic.POP, Mnemonic.MOVZX, Mnemonic.MOVSX, Mnemonic.MOVSXD)
)
# The sites themselves (syscall, int 0x80, call gs:[0x10]) do not end a straight run.
_SITE_CODES = frozenset((Code.SYSCALL, Code.INT_IMM8, Code.CALL_RM32))
# Control never falls through these to the next instruction.
_NO_FALL = frozenset(
    (
        FlowControl.UNCONDITIONAL_BRANCH,
        FlowControl.INDIRECT_BRANCH,
        FlowControl.RETURN,
        FlowControl.EXCEPTION,
    )
)


@dataclass(frozen=True)
class Verdicts:
    """What the code map says about a file's sites."""

    code_map: str  # "eh_frame+symbols", "eh_frame", "symbols", "none"
    data_in_code: dict[int, str] = field(default_factory=dict)  # address -> why not code
    reached: dict[int, str] = field(default_factory=dict)  # uncovered but reached: how
    unmapped: tuple[str, ...] = ()  # sections whose sites were patched for want of a map

    @property
    def sites(self) -> tuple[DataInCode, ...]:
        return tuple(DataInCode(a, w) for a, w in sorted(self.data_in_code.items()))

    def marker(self, data: bytes, bits: int, candidates: int) -> RewriteResult:
        """Every site was data-in-code: the header-only marker, with the sites reported."""
        return marker_result(data, bits, candidates, self.sites, self.code_map)

    def annotate(self, result: RewriteResult) -> RewriteResult:
        return dataclasses.replace(
            result, data_in_code=self.sites, code_map=self.code_map, unmapped=self.unmapped
        )


def guard_sites(
    elf: ElfFile,
    data: bytes,
    texts: Sequence[Section],
    sites: Sequence[tuple[Section, int]],
    enabled: bool,
) -> Verdicts:
    """``judge`` when the data guard is on; otherwise a verdict that lets every site through."""
    return judge(elf, data, texts, sites) if enabled else Verdicts("off")


def _symbol_facts(elf: ElfFile) -> tuple[list[tuple[int, int]], list[int]]:
    """(function ranges with a size, every function symbol's value), from .symtab and .dynsym."""
    fmt = "<IBBHQQ" if elf.is64 else "<IIIBBH"
    want = struct.calcsize(fmt)
    ranges: list[tuple[int, int]] = []
    starts: list[int] = []
    for t in elf.sections:
        if t.type not in (SHT_SYMTAB, SHT_DYNSYM) or t.entsize < want:
            continue
        if t.offset + t.size > len(elf.data):
            continue
        if t.entsize == want:
            rows = struct.iter_unpack(fmt, elf.data[t.offset : t.offset + t.size // want * want])
        else:
            count = t.size // t.entsize
            rows = (
                struct.unpack_from(fmt, elf.data, t.offset + i * t.entsize) for i in range(count)
            )
        if not elf.is64:  # same field order as ELF64's: (name, info, other, shndx, value, size)
            rows = ((n, i, o, x, v, z) for n, v, z, i, o, x in rows)
        funcs = [(v, z) for _, i, _, x, v, z in rows if i & 0xF in _FUNC_TYPES and x and v]
        starts += [v for v, _ in funcs]
        ranges += [(v, v + z) for v, z in funcs if z]
    return ranges, starts


class _Intervals:
    """Possibly overlapping [lo, hi) ranges, sorted, with a running maximum of their ends: a
    membership test is one bisect."""

    def __init__(self, ranges: list[tuple[int, int]], ordered: bool = False) -> None:
        if not ordered:
            ranges.sort()
        self.lows = list(map(_FIRST, ranges))
        self.ends = list(map(_SECOND, ranges))
        self.reach = list(itertools.accumulate(self.ends, max))

    def __contains__(self, addr: int) -> bool:
        k = bisect.bisect_right(self.lows, addr) - 1
        return k >= 0 and addr < self.reach[k]

    def around(self, addr: int) -> tuple[int, int]:
        """For an address no range holds: where the ranges before it end (0 if none) and where
        the next one starts (-1 if none)."""
        k = bisect.bisect_right(self.lows, addr)
        return (self.reach[k - 1] if k else 0), (self.lows[k] if k < len(self.lows) else -1)

    def share(self, lo: int, hi: int) -> int:
        """About how many bytes of [lo, hi) the ranges hold: ranges starting inside count in
        full (overlaps twice), the result is capped at the whole. Enough for a threshold."""
        k = bisect.bisect_left(self.lows, lo)
        end = bisect.bisect_left(self.lows, hi)
        inside = sum(self.ends[k:end]) - sum(self.lows[k:end])
        if k and self.reach[k - 1] > lo:
            inside += min(self.reach[k - 1], hi) - lo  # a range reaching in from before
        return min(hi - lo, inside)

    def last_start_before(self, addr: int) -> int | None:
        k = bisect.bisect_left(self.lows, addr)
        return self.lows[k - 1] if k else None


class CodeMap:
    """The covered intervals of one file and, on demand, its known code entries."""

    def __init__(self, elf: ElfFile, texts: Sequence[Section]) -> None:
        self.elf = elf
        self.texts = list(texts)
        self.sym_ranges, self.sym_starts = _symbol_facts(elf)
        try:
            fdes = fde_ranges(elf)
        except ValueError:
            fdes = None  # a malformed .eh_frame is no evidence
        self.fde_ranges = fdes or []
        self.kind = "+".join(
            k for k, have in (("eh_frame", bool(fdes)), ("symbols", bool(self.sym_ranges))) if have
        )
        self._fdes = _Intervals(self.fde_ranges, ordered=True)
        self._syms = _Intervals(self.sym_ranges)

    @property
    def fde_starts(self) -> list[int]:
        return self._fdes.lows

    @property
    def fde_intervals(self) -> _Intervals:
        return self._fdes

    @property
    def sym_intervals(self) -> _Intervals:
        return self._syms

    def covers(self, addr: int) -> bool:
        return addr in self._fdes or addr in self._syms

    def sync_before(self, addr: int) -> int | None:
        """The closest known instruction start (FDE or function start) before ``addr``."""
        found = [a for a in (r.last_start_before(addr) for r in (self._fdes, self._syms)) if a]
        return max(found) if found else None

    def coverage(self, sec: Section) -> float:
        """The share of ``sec`` that the FDEs or the function symbols describe. A function
        symbol without a size (crt's, hand-written assembly's) is taken to reach the next known
        start here: that is no evidence for a site, but it tells a described file from one
        whose map only knows a few functions."""
        lo, hi = sec.addr, sec.addr + sec.size
        best = max(self._fdes.share(lo, hi), self._syms.share(lo, hi))
        if best >= MIN_COVERAGE * sec.size:
            return best / sec.size  # enough already: spare the sort below
        sized = set(self._syms.lows)
        known = sorted({a for a in (*self.sym_starts, *self._fdes.lows) if lo <= a < hi} | {hi})
        unsized = {a for a in self.sym_starts if a not in sized}
        best += sum(b - a for a, b in itertools.pairwise(known) if a in unsized)
        return min(1.0, best / sec.size) if sec.size else 0.0

    def gap(self, addr: int, sec: Section) -> tuple[int, int]:
        """The uncovered interval holding the uncovered ``addr``, clipped to its section."""
        end = sec.addr + sec.size
        (f_lo, f_hi), (s_lo, s_hi) = self._fdes.around(addr), self._syms.around(addr)
        his = [h for h in (f_hi, s_hi, end) if h >= 0]
        return max(f_lo, s_lo, sec.addr), min(his)

    @cached_property
    def got(self) -> int | None:
        """Where i386 PIC code's GOT register points: ``_GLOBAL_OFFSET_TABLE_``, the start of
        ``.got.plt`` (or ``.got`` without one)."""
        secs = {s.name: s.addr for s in self.elf.sections}
        return secs.get(".got.plt", secs.get(".got"))

    @cached_property
    def entries(self) -> list[int]:
        """Known code entries other than the covered intervals, sorted."""
        elf = self.elf
        out = {elf.entry, *self.sym_starts}
        word = "<Q" if elf.is64 else "<I"
        wsize = struct.calcsize(word)
        try:
            dyn = dict(elf.dynamic_entries or ())
        except ElfError:
            dyn = {}  # a broken dynamic table gives no entries; the rewrite reports it elsewhere
        out.update(dyn[t] for t in (DT_INIT, DT_FINI) if t in dyn)
        for arr, size in (
            (DT_INIT_ARRAY, DT_INIT_ARRAYSZ),
            (DT_FINI_ARRAY, DT_FINI_ARRAYSZ),
            (DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ),
        ):
            if arr in dyn and dyn.get(size):
                out.update(self._words(dyn[arr], dyn[size] // wsize))
        for sec in self.texts:
            if sec.name in PLT_SECTIONS:
                out.update(range(sec.addr, sec.addr + sec.size, PLT_ENTRY))
        out.update(self._relocation_targets())
        return sorted(out)

    def _words(self, vaddr: int, count: int) -> list[int]:
        word = "<Q" if self.elf.is64 else "<I"
        size = struct.calcsize(word)
        try:
            off = self.elf.vaddr_to_offset(vaddr, size * count)
        except ElfError:
            return []
        return [w for (w,) in struct.iter_unpack(word, self.elf.data[off : off + size * count])]

    def _relocation_targets(self) -> set[int]:
        elf = self.elf
        bits = elf.bits
        out: set[int] = set()
        for sec in elf.sections:
            if sec.type not in (SHT_RELA, SHT_REL, SHT_RELR) or sec.type == SHT_NOBITS:
                continue
            raw = elf.data[sec.offset : sec.offset + sec.size]
            if sec.type == SHT_RELR:
                out.update(self._relr(raw))
                continue
            rela = sec.type == SHT_RELA
            fmt = {(64, True): "<QQq", (64, False): "<QQ", (32, True): "<IIi", (32, False): "<II"}
            f = fmt[bits, rela]
            n = struct.calcsize(f)
            if sec.entsize not in (0, n):
                continue
            values = self._symbol_values(sec.link)
            for row in struct.iter_unpack(f, raw[: len(raw) // n * n]):
                where, info = row[0], row[1]
                kind, sym = (
                    (info & 0xFFFFFFFF, info >> 32) if bits == 64 else (info & 0xFF, info >> 8)
                )
                addend = row[2] if rela else self._implicit(where)
                if kind in RELATIVE[bits]:
                    out.add(addend)
                elif kind in SYMBOLIC[bits] and 0 < sym < len(values) and values[sym]:
                    out.add(values[sym] + (addend if rela else 0))
        return out

    def _implicit(self, where: int) -> int:
        words = self._words(where, 1)
        return words[0] if words else 0

    def _relr(self, raw: bytes) -> list[int]:
        word = "<Q" if self.elf.is64 else "<I"
        size = struct.calcsize(word)
        places: list[int] = []
        base = 0
        for (w,) in struct.iter_unpack(word, raw[: len(raw) // size * size]):
            if not w & 1:
                places.append(w)
                base = w + size
            else:
                bits = w >> 1
                places.extend(base + i * size for i in range(size * 8 - 1) if bits >> i & 1)
                base += (size * 8 - 1) * size
        return [w for p in places for w in self._words(p, 1)]

    def _symbol_values(self, link: int) -> list[int]:
        if not 0 < link < len(self.elf.sections):
            return []
        t = self.elf.sections[link]
        fmt = "<IBBHQQ" if self.elf.is64 else "<IIIBBH"
        n = struct.calcsize(fmt)
        if t.type not in (SHT_SYMTAB, SHT_DYNSYM) or t.entsize != n:
            return []
        rows = struct.iter_unpack(fmt, self.elf.data[t.offset : t.offset + t.size // n * n])
        pos = 4 if self.elf.is64 else 1
        return [row[pos] if row[3 if self.elf.is64 else 5] else 0 for row in rows]


class _Gap:
    """Forward reachability inside one uncovered interval of one section."""

    def __init__(self, data: bytes, sec: Section, lo: int, hi: int, bits: int) -> None:
        self.sec, self.lo, self.hi, self.bits = sec, lo, hi, bits
        self.data = data
        self.reached: dict[int, str] = {}  # instruction start -> how it was first reached

    def code(self, start: int, end: int) -> bytes:
        base = self.sec.offset - self.sec.addr
        end = min(end, self.sec.addr + self.sec.size)
        return self.data[start + base : end + base]

    def walk(self, seeds: list[tuple[int, str]], limit: int | None = None) -> None:
        """Follow fall-through and direct branches from ``seeds``, staying inside the gap; with
        ``limit``, only that many instructions of straight fall-through from each seed."""
        todo = [s for s in seeds if self.lo <= s[0] < self.hi and s[0] not in self.reached]
        while todo:
            at, how = todo.pop()
            if at in self.reached:
                continue
            dec = Decoder(self.bits, self.code(at, self.hi + 15), ip=at)
            for count, insn in enumerate(dec):
                ip = insn.ip
                if ip >= self.hi or ip in self.reached or (limit is not None and count >= limit):
                    break
                self.reached[ip] = how
                if limit is not None:
                    if insn.flow_control != FlowControl.NEXT and insn.code not in _SITE_CODES:
                        break
                    continue
                flow = insn.flow_control
                t = insn.near_branch_target
                if t and self.lo <= t < self.hi and t not in self.reached:
                    todo.append((t, how))
                if flow in _NO_FALL or insn.is_invalid:
                    break


def judge(
    elf: ElfFile,
    data: bytes,
    texts: Sequence[Section],
    sites: Sequence[tuple[Section, int]],
) -> Verdicts:
    """Classify the linear-sweep ``sites`` (section, address) of one file."""
    cmap = CodeMap(elf, texts)
    if not cmap.kind:
        return Verdicts("none")
    fdes, syms = cmap.fde_intervals, cmap.sym_intervals
    uncovered = [(sec, addr) for sec, addr in sites if addr not in fdes and addr not in syms]
    if not uncovered:
        return Verdicts(cmap.kind)
    mapped: dict[str, bool] = {}
    for sec, _ in uncovered:
        if sec.name not in mapped:
            mapped[sec.name] = cmap.coverage(sec) >= MIN_COVERAGE
    open_sites = [(sec, addr) for sec, addr in uncovered if mapped[sec.name]]
    unmapped = tuple(n for n, ok in mapped.items() if not ok)
    if not open_sites:
        return Verdicts(cmap.kind, unmapped=unmapped)
    bits = elf.bits
    gaps: dict[tuple[int, int], _Gap] = {}
    for sec, addr in open_sites:
        lo, hi = cmap.gap(addr, sec)
        if (lo, hi) not in gaps:
            gaps[lo, hi] = _Gap(data, sec, lo, hi, bits)
    for g in gaps.values():
        g.walk(_falls_into(cmap, g))
        if any(g.lo <= a < g.hi and a not in g.reached for _, a in open_sites):
            g.walk(_entries_in(cmap, g))
    entered = [
        g
        for g in gaps.values()
        if any(g.lo <= a < g.hi and a not in g.reached for _, a in open_sites)
    ]
    if entered:
        _second_sweep(cmap, texts, data, bits, entered)
    out: dict[int, str] = {}
    reached: dict[int, str] = {}
    for sec, addr in open_sites:
        g = gaps[cmap.gap(addr, sec)]
        if addr in g.reached:
            reached[addr] = g.reached[addr]
        else:
            out[addr] = (
                f"outside every FDE and function symbol; the {g.hi - g.lo:#x}-byte gap "
                f"[{g.lo:#x}, {g.hi:#x}) around it is not entered from code (fall-through, "
                "direct branch, an address taken just before it), nor from an entry, PLT slot "
                "or relocation target in it"
            )
    return Verdicts(cmap.kind, out, reached, unmapped)


def _entries_in(cmap: CodeMap, g: _Gap) -> list[tuple[int, str]]:
    """The known code entries inside the gap."""
    k = bisect.bisect_left(cmap.entries, g.lo)
    seeds: list[tuple[int, str]] = []
    while k < len(cmap.entries) and cmap.entries[k] < g.hi:
        seeds.append((cmap.entries[k], f"reached from the code entry {cmap.entries[k]:#x}"))
        k += 1
    return seeds


def _falls_into(cmap: CodeMap, g: _Gap) -> list[tuple[int, str]]:
    """Decode the covered code just before the gap from its closest known instruction start:
    where it falls through into the gap, and its direct branches into it."""
    start = cmap.sync_before(g.lo)
    if start is None or not cmap.covers(g.lo - 1):
        return []
    out: list[tuple[int, str]] = []
    last = None
    covers = cmap.covers
    for insn in Decoder(g.bits, g.code(start, g.lo + 15), ip=start):
        if insn.ip >= g.lo:
            break
        t = insn.near_branch_target
        if g.lo <= t < g.hi and covers(insn.ip):
            out.append((t, f"reached by the direct branch at {insn.ip:#x} (code)"))
        last = insn
    # Only an instruction the map describes as code counts as falling into the gap.
    falls = last is not None and last.flow_control not in _NO_FALL and not last.is_invalid
    if last is not None and falls and covers(last.ip) and last.next_ip >= g.lo:
        out.append((last.next_ip, f"reached by fall-through from code at {last.ip:#x}"))
    return out


def _watch(
    insn: Instruction,
    watched: list[tuple[int, int, int, int, int]],
    taken: list[tuple[int, int, int]],
) -> list[tuple[int, int, int, int, int]]:
    """One more instruction after each watched address: drop those it dereferences, keep
    those whose watch ends."""
    full = RegisterExt.full_register
    used = {full(insn.memory_base), full(insn.memory_index)} if insn.op_count else set()
    # An instruction that only writes the register ends the watch: the address was not used.
    written = (
        full(insn.op0_register)
        if insn.op0_kind == OpKind.REGISTER and insn.mnemonic in _WRITES_OP0
        else None
    )
    left = []
    for reg, src, t, n, k in watched:
        if reg in used:
            continue
        if k <= 1 or reg == written:
            taken.append((src, t, n))
        else:
            left.append((reg, src, t, n, k - 1))
    return left


def _pieces(cmap: CodeMap, texts: Sequence[Section]) -> Iterator[tuple[Section, int, int]]:
    """Each text section cut at every known instruction start (FDE and function starts), so the
    decode resynchronises there: a linear sweep that lost sync in data would miss the branches
    and taken addresses of the code after it."""
    starts = sorted({*cmap.sym_starts, *cmap.fde_starts})
    for sec in texts:
        lo, hi = sec.addr, sec.addr + sec.size
        k, end = bisect.bisect_right(starts, lo), bisect.bisect_left(starts, hi)
        cuts = [lo, *starts[k:end], hi]
        for a, b in itertools.pairwise(cuts):
            yield sec, a, b


_BRANCH, _LEA_KIND, _MOV_KIND = 1, 2, 3
_BRANCH_OPERANDS = frozenset(
    (
        OpCodeOperandKind.BR16_1,
        OpCodeOperandKind.BR16_2,
        OpCodeOperandKind.BR32_1,
        OpCodeOperandKind.BR32_4,
        OpCodeOperandKind.BR64_1,
        OpCodeOperandKind.BR64_4,
        OpCodeOperandKind.BRDISP_2,
        OpCodeOperandKind.BRDISP_4,
        OpCodeOperandKind.XBEGIN_2,
        OpCodeOperandKind.XBEGIN_4,
    )
)


@functools.cache
def _sweep_kinds() -> dict[int, int]:
    """The instruction codes the second sweep looks at: every one with a near-branch operand
    (only those have a ``near_branch_target``), ``lea`` and ``mov`` of an immediate. Built from
    iced's opcode tables once (~14 ms), and only by a file that needs the second sweep."""
    kinds: dict[int, int] = {}
    for name in dir(Code):
        code = getattr(Code, name)
        if name.startswith("_") or not isinstance(code, int):
            continue
        info = OpCodeInfo(code)  # type: ignore[arg-type]  # the stubs' Code is a module
        if any(info.op_kind(i) in _BRANCH_OPERANDS for i in range(info.op_count)):
            kinds[code] = _BRANCH
    kinds.update(dict.fromkeys(_LEA, _LEA_KIND))
    kinds.update(dict.fromkeys(_MOV_IMM, _MOV_KIND))
    return kinds


def _second_sweep(
    cmap: CodeMap, texts: Sequence[Section], data: bytes, bits: int, gaps: list[_Gap]
) -> None:
    """A second sweep recording what enters ``gaps`` from code: direct branches into them, and
    code addresses taken by code (a RIP- or GOT-relative ``lea``, an immediate address), as a
    signal restorer's address is taken to be stored in ``sa_restorer``. A source that is itself
    code (covered, or already reached) makes its target a seed; repeats until nothing new is
    reached.

    An address taken is weaker evidence than a branch: a table's address is taken the same way.
    So an address that the next few instructions dereference does not count, and from one that
    counts only a short straight run of instructions is walked.
    """
    lows = sorted((g.lo, g.hi, n) for n, g in enumerate(gaps))
    starts = [lo for lo, _, _ in lows]
    got = cmap.got
    mask = (1 << bits) - 1

    lowest, highest = lows[0][0], max(hi for _, hi, _ in lows)  # most targets fall outside

    def gap_of(t: int) -> int:
        k = bisect.bisect_right(starts, t) - 1
        return lows[k][2] if k >= 0 and t < lows[k][1] else -1

    branches: list[tuple[int, int, int]] = []  # (source, target, gap index)
    taken: list[tuple[int, int, int]] = []
    # Addresses just taken, watched for a few instructions: (register, source, target, gap,
    # instructions left). One dereferenced (the register as a memory base or index) is a data
    # pointer, as a table's is; one that is not (stored, passed on) counts.
    watched: list[tuple[int, int, int, int, int]] = []
    kinds = _sweep_kinds()
    for sec, start, stop in _pieces(cmap, texts):
        base = sec.offset - sec.addr
        # Up to 15 bytes past the piece, for the instruction that straddles its end; those that
        # start after it belong to the next piece and are dropped.
        end = min(stop + 15, sec.addr + sec.size)
        for insn in Decoder(bits, data[start + base : end + base], ip=start):
            # Only the code is read of most instructions: each attribute read costs about as
            # much as decoding the instruction.
            kind = kinds.get(insn.code)
            if watched:
                if insn.ip >= stop:
                    break
                watched = _watch(insn, watched, taken)
            if kind is None:
                continue
            if kind == _BRANCH:
                t = insn.near_branch_target
                if t and lowest <= t < highest and (n := gap_of(t)) >= 0:
                    ip = insn.ip
                    if ip >= stop:
                        break
                    branches.append((ip, t, n))
                continue
            if kind == _LEA_KIND:
                if insn.is_ip_rel_memory_operand:
                    t = insn.ip_rel_memory_address
                elif bits == 32 and insn.memory_base != Register.NONE and got is not None:
                    t = (got + insn.memory_displacement) & mask
                else:
                    t = insn.memory_displacement
            else:
                t = insn.immediate(1)
            if lowest <= t < highest and (n := gap_of(t)) >= 0:
                ip = insn.ip
                if ip >= stop:
                    break
                if insn.op0_kind == OpKind.REGISTER:
                    reg = RegisterExt.full_register(insn.op0_register)
                    watched.append((reg, ip, t, n, WATCH))
        taken += [(src, t, n) for _, src, t, n, _ in watched]
        watched = []
    for src, t, n in taken:
        if cmap.covers(src):
            gaps[n].walk([(t, f"its address is taken by code at {src:#x}")], limit=TAKEN_REACH)
    changed = True
    while changed:
        changed = False
        for src, t, n in branches:
            g = gaps[n]
            if t in g.reached:
                continue
            if cmap.covers(src) or any(src in h.reached for h in gaps):
                g.walk([(t, f"reached by the direct branch at {src:#x}")])
                changed = True
