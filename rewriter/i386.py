"""i386 (ELF32) rewriting: the scheme of upstream LiteBox commit 3cc745cc (reference §4).

Sites are ``int 0x80`` and ``call dword ptr gs:[0x10]`` (the vDSO ``__kernel_vsyscall``
indirection). Each becomes a ``JMP rel32`` to a stub that enters the runtime with

    50 | E8 00 00 00 00 | 58 | FF 90 d32      push eax; call +0; pop eax; call [eax+d32]

where eax+d32 is the 4-byte callback slot. Both stub ABIs write these same bytes: the red zone and
R11 of the x86-64 ABIs do not exist here (spec/stub-abi.md). Borrowed instructions are copied
verbatim, as upstream did: i386 has no RIP-relative operands, and the scans never borrow a
relative branch except strategy (c)'s ``jmp`` back onto P, which upstream also copied raw.

Where §4 leaves a detail open, the choice made is stated at the code that makes it.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

from iced_x86 import Code, Decoder, FlowControl, Instruction, OpKind, Register

from .codemap import guard_sites
from .common import JMP_LEN, JMP_REL32, Abi, Policy, Strategy, trap_fill
from .elf import SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC, ElfFile, Section
from .emit import Patch, SiteWork, emit_patched, trampoline_vaddr
from .errors import RewriteError
from .fork_patch import ForkPatch, plan_fork_patch
from .result import Outcome, RewriteResult, marker_result, unchanged
from .trailer import TrailerState, check_trailer

SLOT_SIZE = 4
U32 = 1 << 32
ENTRY_LEN = 13
ENDBR32 = b"\xf3\x0f\x1e\xfb"
# glibc's int 0x80 fallback for __kernel_vsyscall: without a vDSO, gs:[0x10] points at it, and
# its int 0x80 must stay a real instruction at its own address (upstream skips it).
SYSINFO_INT80 = "_dl_sysinfo_int80"

# Byte patterns that every site contains. Finding none in any text section proves there is no
# site without decoding. The last one is the SIB spelling of gs:[0x10], which _is_site also
# accepts; glibc only ever uses 65 FF 15 10 00 00 00.
PATTERNS = (b"\xcd\x80", b"\xff\x15\x10\x00\x00\x00", b"\xff\x14\x25\x10\x00\x00\x00")

_INT = Code.INT_IMM8
_CALL_RM32 = Code.CALL_RM32
_SITE_CODES = frozenset((_INT, _CALL_RM32))
_NEAR_BRANCH_TARGET = operator.attrgetter("near_branch_target")
_DIRECT_NEAR = (OpKind.NEAR_BRANCH32, OpKind.NEAR_BRANCH16)


def rel32(target: int, next_ip: int) -> bytes:
    """A rel32 field. EIP arithmetic wraps at 4 GiB, so every u32 pair is reachable."""
    return struct.pack("<I", (target - next_ip) % U32)


def entry_sequence(at: int, slot: int) -> bytes:
    """The 13 bytes placed at ``at``: save EAX, find our own address, call through the slot.

    No ``pop eax`` follows: the callback pops the return address and the saved EAX itself.
    """
    pop_at = at + 6
    return b"\x50\xe8\x00\x00\x00\x00\x58\xff\x90" + struct.pack("<I", (slot - pop_at) % U32)


def _back(target: int, at: int) -> bytes:
    return JMP_REL32 + rel32(target, at + JMP_LEN)


# --- sites ---------------------------------------------------------------------------------------


def _is_site(insn: Instruction) -> bool:
    code = insn.code
    if code == _INT:
        return insn.immediate8 == 0x80
    # Matched by meaning (prefixes in any order, SIB or not), but with a 32-bit address: the
    # 16-bit-address spelling (67 65 FF 16 10 00) is no site, so PATTERNS stay exact.
    # §4.1 names only the 65 FF 15 10 00 00 00 encoding.
    return (
        code == _CALL_RM32
        and insn.memory_segment == Register.GS
        and insn.memory_base == Register.NONE
        and insn.memory_index == Register.NONE
        and insn.memory_displ_size == 4
        and insn.memory_displacement == 0x10
    )


def _has_pattern(data: bytes, sec: Section) -> bool:
    return any(data.find(p, sec.offset, sec.offset + sec.size) >= 0 for p in PATTERNS)


def sysinfo_int80(elf: ElfFile) -> int | None:
    """Address of the ``.symtab`` function ``_dl_sysinfo_int80`` (never ``.dynsym``: upstream
    consulted the static symbol table only, so a stripped ld.so keeps the site)."""
    for table in (s for s in elf.sections if s.type == SHT_SYMTAB):
        hits = [
            s.value
            for s in elf.symbols(table, [SYSINFO_INT80])
            if s.type in (STT_FUNC, STT_GNU_IFUNC)
        ]
        if len(set(hits)) > 1:
            # The name lookup does not keep table order; "first match" needs a full pass.
            hits = [
                s.value
                for s in elf.symbols(table)
                if s.name == SYSINFO_INT80 and s.type in (STT_FUNC, STT_GNU_IFUNC)
            ]
        if hits:
            return hits[0]
    return None


# Instructions kept on each side of a site. A scan takes at most three steps beyond the site (every
# instruction adds a byte to a site of at least two, and five are enough), so a run this long
# behaves exactly like the whole section: it is cut short only where the section itself ends.
CONTEXT = 8


class Run(NamedTuple):
    """A stretch of one section's linear sweep around a site, and the file it came from
    (borrowed bytes are copied from there)."""

    section: Section
    data: bytes
    insns: list[Instruction]

    def raw(self, start: int, end: int) -> bytes:
        off = self.section.offset - self.section.addr
        return self.data[start + off : end + off]


def decode(
    data: bytes, texts: list[Section], skip: int | None
) -> tuple[list[tuple[Run, int]], set[int]]:
    """Sites (run, index) in section-header then address order, and all direct branch targets.

    One linear sweep per section that keeps only CONTEXT instructions around each site, so a huge
    section costs no more memory than a small one. No 8 MiB chunking: upstream's chunking (§5.1)
    came with its x86-64 code after the i386 removal, and i386 text sections that large do not
    occur.
    """
    targets: set[int] = set()
    sites: list[tuple[Run, int]] = []
    for sec in texts:
        # iced takes bytes only: one section's copy at a time, dropped after its sweep
        dec = Decoder(32, data[sec.offset : sec.offset + sec.size], ip=sec.addr)
        if not _has_pattern(data, sec):
            targets.update(map(_NEAR_BRANCH_TARGET, dec))
            continue
        add = targets.add
        recent: deque[Instruction] = deque(maxlen=CONTEXT)
        growing: list[tuple[list[Instruction], int]] = []  # runs still taking instructions
        for insn in dec:
            add(insn.near_branch_target)
            if growing:
                for insns, _ in growing:
                    insns.append(insn)
                growing = [g for g in growing if len(g[0]) < g[1]]
            if insn.code in _SITE_CODES and _is_site(insn) and insn.ip != skip:
                insns = [*recent, insn]
                sites.append((Run(sec, data, insns), len(insns) - 1))
                growing.append((insns, len(insns) + CONTEXT))
            recent.append(insn)
    targets.discard(0)
    return sites, targets


# --- strategies (§4.3) ---------------------------------------------------------------------------


def plan_before(run: Run, i: int, targets: set[int], stub_at: int, slot: int) -> Patch | None:
    """(a): borrow instructions before the site; the scan starts with the site itself."""
    insns = run.insns
    site = insns[i]
    end = site.next_ip
    # As in §5.2: a jump landing on the site must not land on NOP filler. (A 7-byte call at a
    # branch target then goes to (b), which yields the same bytes with the window at the site.)
    if site.ip in targets:
        return None
    for j in range(i, -1, -1):
        insn = insns[j]
        # §4.3 says the scan includes the site, so the site is exempt from the flow test (its
        # flow is Interrupt or IndirectCall). Only the site: the Code-equality exemption is
        # documented for (b) alone, so an earlier int 0x80 still stops this scan.
        if j != i and insn.flow_control != FlowControl.NEXT:
            return None
        if end - insn.ip >= JMP_LEN:
            borrowed = run.raw(insn.ip, site.ip)
            at = stub_at + len(borrowed)
            stub = borrowed + entry_sequence(at, slot) + _back(end, at + ENTRY_LEN)
            return Patch(site.ip, Strategy.BEFORE, insn.ip, end, stub)
        if insn.ip in targets:
            return None
    return None


def plan_after(run: Run, i: int, targets: set[int], stub_at: int, slot: int) -> Patch | None:
    """(b): borrow instructions after the site; the scan starts at the site."""
    insns = run.insns
    site = insns[i]
    for j in range(i, len(insns)):
        insn = insns[j]
        # Upstream's quirk: an instruction with the site's Code (the site itself, another int
        # imm8, any call r/m32) skips both tests. Both tests come before the length test, so the
        # last borrowed instruction is never a control transfer of another kind.
        if insn.code != site.code and (insn.ip in targets or insn.flow_control != FlowControl.NEXT):
            return None
        if insn.next_ip - site.ip >= JMP_LEN:
            moved = run.raw(site.next_ip, insn.next_ip)
            at = stub_at + ENTRY_LEN + len(moved)
            stub = entry_sequence(stub_at, slot) + moved + _back(insn.next_ip, at)
            return Patch(site.ip, Strategy.AFTER, site.ip, insn.next_ip, stub)
    return None


def plan_before_and_after(
    run: Run, i: int, targets: set[int], stub_at: int, slot: int
) -> Patch | None:
    """(c): exactly one instruction P before and one N after the site."""
    insns = run.insns
    if i == 0 or i + 1 >= len(insns):
        return None
    p, site, n = insns[i - 1], insns[i], insns[i + 1]
    if p.len + site.len + n.len < JMP_LEN:
        return None
    if site.ip in targets or n.ip in targets or p.flow_control != FlowControl.NEXT:
        return None
    flow = n.flow_control
    if flow == FlowControl.NEXT:
        jump_back = True
    elif flow == FlowControl.RETURN or (
        flow == FlowControl.UNCONDITIONAL_BRANCH
        and n.op0_kind in _DIRECT_NEAR
        and n.near_branch_target == p.ip
    ):
        jump_back = False  # N never falls through: a return, or a loop back onto P
    else:
        return None
    at = stub_at + p.len
    # N is copied raw even when it is the jmp back onto P: byte parity with upstream (§4.3).
    # In the stub that short jmp lands inside the entry sequence; it only matters for loops
    # such as _exit's, which the callback never returns into.
    stub = run.raw(p.ip, site.ip) + entry_sequence(at, slot) + run.raw(n.ip, n.next_ip)
    if jump_back:
        stub += _back(n.next_ip, stub_at + len(stub))
    return Patch(site.ip, Strategy.BEFORE_AND_AFTER, p.ip, n.next_ip, stub)


PLANS = (plan_before, plan_after, plan_before_and_after)


def plan_fork_patch_32(elf: ElfFile, data: bytes) -> ForkPatch | None:
    """The shared fork→vfork plan, with an ENDBR32 at fork's entry kept like ENDBR64."""
    fork = plan_fork_patch(elf, data)
    if fork is None or data[fork.file_offset : fork.file_offset + 4] != ENDBR32:
        return fork
    at = fork.jump_vaddr + len(ENDBR32)
    text = next(s for s in elf.text_sections if s.addr <= fork.fork_vaddr < s.addr + s.size)
    if at + JMP_LEN > text.addr + text.size:
        raise RewriteError(f"fork→vfork: the jump at {at:#x} would leave section {text.name}")
    return dataclasses.replace(fork, jump_vaddr=at, file_offset=fork.file_offset + len(ENDBR32))


def _candidates(data: bytes, texts: list[Section]) -> int:
    """How many PATTERNS occurrences the text sections hold (most are real sites)."""
    total = 0
    for s in texts:
        end = s.offset + s.size
        for p in PATTERNS:
            i = data.find(p, s.offset, end)
            while i >= 0:
                total += 1
                i = data.find(p, i + 1, end)
    return total


def rewrite_i386(
    data: bytes,
    elf: ElfFile,
    *,
    abi: Abi,
    unpatchable: Policy,
    fork_patch: bool,
    data_guard: bool = True,
) -> RewriteResult:
    """Rewrite an ELF32 i386 file; ``rewrite_elf`` has already checked it is one."""

    texts = elf.text_sections
    if not texts:
        return unchanged(data, "no executable section")
    if check_trailer(data, bits=32).state is TrailerState.VALID:
        return RewriteResult(data, Outcome.ALREADY_HOOKED, "already has a LITEBOX0 trailer")
    candidates = _candidates(data, texts)
    if candidates == 0:
        return marker_result(data, 32, 0)
    sites, targets = decode(data, texts, sysinfo_int80(elf))
    if not sites:
        return marker_result(data, 32, candidates)
    guard = guard_sites(
        elf, data, texts, [(run.section, run.insns[i].ip) for run, i in sites], data_guard
    )
    sites = [(run, i) for run, i in sites if run.insns[i].ip not in guard.data_in_code]
    if not sites:
        return guard.marker(data, 32, candidates)

    blob_vaddr = trampoline_vaddr(elf)
    slot = blob_vaddr

    def plans(run: Run, i: int) -> Callable[[int], Iterator[Patch]]:
        def candidates_at(stub_at: int) -> Iterator[Patch]:
            for attempt in PLANS:  # the strategies in upstream's order; the first that fits wins
                patch = attempt(run, i, targets, stub_at, slot)
                if patch is not None:
                    yield patch

        return candidates_at

    work = [
        SiteWork(run.section, run.insns[i].ip, run.insns[i].len, plans(run, i)) for run, i in sites
    ]
    result = emit_patched(
        data,
        work,
        blob_vaddr=blob_vaddr,
        slot_size=SLOT_SIZE,
        bits=32,
        abi=abi,
        unpatchable=unpatchable,
        # Upstream computed every window from the original decode, so a second stub could copy
        # bytes already replaced by the first jump (or, here, the original ones): neither is
        # the original program. Overlapping windows are refused, as redzone does on x86-64.
        refuse_overlap=True,
        trap=trap_fill,
        fork=lambda: plan_fork_patch_32(elf, data) if fork_patch else None,
        candidates=candidates,
        rel=rel32,
    )
    return guard.annotate(result)
