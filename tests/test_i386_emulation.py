"""Semantic equivalence of every patched i386 site, by emulation with unicorn (UC_MODE_32).

For each patched site of the i386 libc.so.6, ld-linux.so.2 and the samples, the original image
and the rewritten image (with its blob, the slot pointing at a page of ``hlt``) are mapped once,
each in its own emulator, with identical scratch memory. Per site, a few seeded random states
(GPRs pointing into scratch or holding small or arbitrary numbers, random flags) run twice:

phase 1  original: window start → the site instruction. rewritten: window start → the callback.
         At the callback, per reference §4.2: ESP = original ESP − 8, [ESP] = the return address
         just after the stub's ``call [eax+d]``, [ESP+4] = the original EAX (the syscall number),
         and EBX, ECX, EDX, ESI, EDI, EBP and EFLAGS equal the original's; memory writes are the
         same apart from those two stack slots.
phase 2  the "kernel" returns a random EAX. The original resumes after the site (``int 0x80``
         and ``call gs:[0x10]`` both leave ESP as it was). The callback pops the return address
         and the saved EAX, sets EAX and returns. Both run until they leave the window / stub:
         same exit address, same registers, same memory writes.

A state whose displaced instructions fault counts only if both emulations fault the same way
(same error, same original instruction). Strategy (c) with N = the jmp back onto P (copied raw
for upstream byte parity, §4.3) is checked in phase 1 only; the test pins where that raw jmp
lands instead.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_WRITE,
    UC_MEM_FETCH_UNMAPPED,
    UC_MODE_32,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn import x86_const as X

from rewriter import RewriteResult, Site, Strategy, rewrite_elf
from tests.conftest import BuildSample
from tests.test_i386_real import LDSO32, LIBC32, PAGE, align, read_elf32, rewritten
from tests.test_i386_vectors import VECTORS, asm, tiny_elf32

GPRS = {
    "eax": X.UC_X86_REG_EAX,
    "ebx": X.UC_X86_REG_EBX,
    "ecx": X.UC_X86_REG_ECX,
    "edx": X.UC_X86_REG_EDX,
    "esi": X.UC_X86_REG_ESI,
    "edi": X.UC_X86_REG_EDI,
    "ebp": X.UC_X86_REG_EBP,
    "esp": X.UC_X86_REG_ESP,
    "eflags": X.UC_X86_REG_EFLAGS,
}
REG_IDS = list(GPRS.values())
SCRATCH = 0x7000_0000
SCRATCH_SIZE = 0x100_0000
CALLBACK = 0x6000_0000  # a page of hlt: the slot points here
UNTIL = CALLBACK + 0x800  # never reached; the code hook does the stopping
MAX_STEPS = 256
FLAG_BITS = (0x1, 0x4, 0x10, 0x40, 0x80, 0x800)  # CF PF AF ZF SF OF
STATES_PER_SITE = 2
MAX_TRIES = 8
U32 = (1 << 32) - 1

Ranges = list[tuple[int, int]]


class Fault(NamedTuple):
    error: object
    pc: int


@dataclass
class Stop:
    pc: int | None
    fault: Fault | None
    writes: list[tuple[int, int, int]]
    regs: dict[str, int] = field(default_factory=dict)


def _runs(pages: list[int]) -> Iterable[tuple[int, int]]:
    start = prev = pages[0]
    for p in pages[1:]:
        if p != prev + 1:
            yield start, prev + 1
            start = p
        prev = p
    yield start, prev + 1


class Machine:
    """One 32-bit unicorn with an ELF's PT_LOADs at their link addresses and scratch memory;
    for a rewritten ELF also its blob, the slot holding CALLBACK as the loader would write it."""

    def __init__(self, data: bytes, scratch: bytes, res: RewriteResult | None = None) -> None:
        self.uc: Any = Uc(UC_ARCH_X86, UC_MODE_32)
        uc = self.uc
        elf = read_elf32(data)
        pages: set[int] = set()
        for p in elf.loads:
            pages.update(range(p.vaddr // PAGE, align(p.vaddr + p.memsz, PAGE) // PAGE))
        for lo, hi in _runs(sorted(pages)):
            uc.mem_map(lo * PAGE, (hi - lo) * PAGE, UC_PROT_ALL)
        for p in elf.loads:
            uc.mem_write(p.vaddr, data[p.offset : p.offset + p.filesz])
        if res is not None:
            t = res.trailer
            assert t is not None and t.bits == 32
            uc.mem_map(t.vaddr, align(t.size, PAGE), UC_PROT_ALL)
            uc.mem_write(t.vaddr, data[t.file_offset : t.file_offset + t.size])
            uc.mem_write(t.vaddr, struct.pack("<I", CALLBACK))
        uc.mem_map(CALLBACK, PAGE, UC_PROT_ALL)
        uc.mem_write(CALLBACK, b"\xf4" * PAGE)
        uc.mem_map(SCRATCH, SCRATCH_SIZE, UC_PROT_ALL)
        uc.mem_write(SCRATCH, scratch)
        self.allowed: Ranges = []
        self.steps = 0
        self.exit_pc: int | None = None
        self.last_pc = 0
        self.writes: list[tuple[int, int, int]] = []
        self.undo: list[tuple[int, bytes]] = []
        uc.hook_add(UC_HOOK_CODE, self._on_code)
        uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid)

    def _on_code(self, uc: Uc, addr: int, _size: int, _data: object) -> None:
        if not any(lo <= addr < hi for lo, hi in self.allowed):
            self.exit_pc = addr
            uc.emu_stop()
            return
        self.last_pc = addr
        self.steps += 1
        if self.steps > MAX_STEPS:
            uc.emu_stop()

    def _on_write(self, uc: Uc, _access: int, addr: int, size: int, value: int, _d: object) -> None:
        self.undo.append((addr, bytes(uc.mem_read(addr, size))))
        self.writes.append((addr, size, value & ((1 << (8 * size)) - 1)))

    def _on_invalid(self, _uc: Uc, access: int, addr: int, _s: int, _v: int, _d: object) -> bool:
        # Leaving for an unmapped address (a ret to a random return address) is an exit too.
        if access == UC_MEM_FETCH_UNMAPPED and self.last_pc != addr:
            self.exit_pc = addr
        return False

    def set_regs(self, regs: dict[str, int]) -> None:
        self.uc.reg_write_batch([(GPRS[k], v) for k, v in regs.items()])

    def regs(self) -> dict[str, int]:
        return dict(zip(GPRS, self.uc.reg_read_batch(REG_IDS), strict=True))

    def u32(self, addr: int) -> int:
        return int(struct.unpack("<I", self.uc.mem_read(addr, 4))[0])

    def run(self, begin: int, allowed: Ranges) -> Stop:
        """Execute from ``begin`` until the first instruction outside ``allowed``."""
        self.allowed, self.steps, self.exit_pc, self.last_pc = allowed, 0, None, begin
        self.writes = []
        if not any(lo <= begin < hi for lo, hi in allowed):
            return Stop(begin, None, [], self.regs())
        try:
            self.uc.emu_start(begin, UNTIL)
        except UcError as e:
            if self.exit_pc is not None:
                return Stop(self.exit_pc, None, self.writes, self.regs())
            return Stop(None, Fault(e.errno, self.last_pc), self.writes, self.regs())
        if self.exit_pc is None:
            return Stop(None, Fault("runaway", self.last_pc), self.writes, self.regs())
        return Stop(self.exit_pc, None, self.writes, self.regs())

    def restore(self) -> None:
        for addr, old in reversed(self.undo):
            self.uc.mem_write(addr, old)
        self.undo = []


@functools.lru_cache(maxsize=1)
def scratch_bytes() -> bytes:
    return random.Random(0x1386).randbytes(SCRATCH_SIZE)


def random_state(rng: random.Random) -> dict[str, int]:
    def value() -> int:
        kind = rng.random()
        if kind < 0.6:  # a pointer into the middle of scratch: memory operands resolve
            return SCRATCH + 0x60_0000 + (rng.randrange(0x40_0000) & ~0x3)
        if kind < 0.85:
            return rng.randrange(256)
        return rng.getrandbits(32)

    state = {name: value() for name in GPRS if name != "eflags"}
    state["esp"] = SCRATCH + 0x60_0000 + (rng.randrange(0x40_0000) & ~0xF)
    flags = 0x2
    for bit in FLAG_BITS:
        flags |= bit if rng.random() < 0.5 else 0
    state["eflags"] = flags
    return state


def return_value(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.5:
        return rng.randrange(0x1000)
    if pick < 0.8:
        return U32 + 1 - rng.randrange(1, 4096)  # -errno
    return rng.getrandbits(32)


# --- one site ----------------------------------------------------------------------------------


def site_len(m: Machine, site: Site) -> int:
    return 2 if bytes(m.uc.mem_read(site.address, 1)) == b"\xcd" else 7


def to_original(pc: int, site: Site) -> int:
    """Map an address in a stub's copy of the instructions before the site to the original."""
    start, stub = site.window[0], site.stub_vaddr or 0
    k = site.address - start
    return start + (pc - stub) if stub <= pc < stub + k else pc


def loops_onto_p(orig: Machine, site: Site, n: int) -> bool:
    """(c) whose N is the short jmp back onto P."""
    after = site.address + n
    raw = bytes(orig.uc.mem_read(after, site.window[1] - after))
    return site.strategy is Strategy.BEFORE_AND_AFTER and raw == b"\xeb" + bytes(
        [(site.window[0] - site.window[1]) & 0xFF]
    )


@dataclass
class Tally:
    sites: int = 0
    clean: int = 0
    faulted: int = 0
    phase1_only: list[int] = field(default_factory=list)
    never_clean: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_site(orig: Machine, new: Machine, site: Site, tally: Tally) -> None:
    rng = random.Random(site.address)
    tally.sites += 1
    clean = 0
    for _ in range(MAX_TRIES):
        if clean >= STATES_PER_SITE:
            break
        problem, ok = one_state(orig, new, site, random_state(rng), rng, tally)
        orig.restore()
        new.restore()
        if problem:
            tally.problems.append(f"site {site.address:#x}: {problem}")
            return
        clean += ok
        tally.clean += ok
        tally.faulted += not ok
    if clean == 0:
        tally.never_clean.append(site.address)


def one_state(
    orig: Machine,
    new: Machine,
    site: Site,
    state: dict[str, int],
    rng: random.Random,
    tally: Tally,
) -> tuple[str | None, bool]:
    sc, (start, end), stub = site.address, site.window, site.stub_vaddr or 0
    n = site_len(orig, site)
    k = sc - start  # bytes borrowed before the site: (a) and (c), none in (b)
    stub_range = (stub, stub + site.stub_size)
    # Phase 1
    orig.set_regs(state)
    new.set_regs(state)
    a = orig.run(start, [(start, sc)])
    b = new.run(start, [(start, end), stub_range])
    if a.fault or b.fault:
        if a.fault is None or b.fault is None:
            return f"only one faulted: original {a.fault}, rewritten {b.fault}", False
        if a.fault != b.fault._replace(pc=to_original(b.fault.pc, site)):
            return f"different faults: {a.fault} vs {b.fault}", False
        return (None if a.writes == b.writes else "different writes before the fault"), False
    if a.pc != sc or b.pc != CALLBACK:
        return f"phase 1 ended at {a.pc} / {b.pc}", False
    esp = a.regs["esp"]
    diffs = [
        r for r in ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eflags") if a.regs[r] != b.regs[r]
    ]
    if diffs:
        return f"phase 1 registers differ: {diffs}", False
    if b.regs["esp"] != esp - 8:
        return "ESP at the callback is not the original ESP − 8", False
    if new.u32(esp - 4) != a.regs["eax"]:
        return "[ESP+4] at the callback is not the original EAX", False
    if new.u32(esp - 8) != stub + k + 13:
        return "[ESP] at the callback is not the return address after the call", False
    if [w for w in b.writes if not esp - 8 <= w[0] < esp] != a.writes:
        return "phase 1 memory writes differ", False
    if loops_onto_p(orig, site, n):
        # The raw `EB xx` of N jumps relative to its copy in the stub: into the entry sequence.
        copy_at = stub + k + 13
        target = (copy_at + 2 + struct.unpack("b", bytes([(start - end) & 0xFF]))[0]) & U32
        if not stub + k < target < stub + k + 13:
            return f"raw jmp back lands at {target:#x}, outside the entry sequence", False
        if sc not in tally.phase1_only:
            tally.phase1_only.append(sc)
        return None, True
    # Phase 2: the "kernel" returns R
    result = return_value(rng)
    orig.set_regs({"eax": result})
    a2 = orig.run(sc + n, [(start, sc), (sc + n, end)])
    ret = new.u32(esp - 8)
    new.set_regs({"eax": result, "esp": esp})
    b2 = new.run(ret, [stub_range])
    if a2.fault or b2.fault:
        if a2.fault is None or b2.fault is None or a2.writes != b2.writes:
            return f"phase 2 faults differ: {a2.fault} vs {b2.fault}", False
        return None, False
    if a2.pc != b2.pc:
        return f"phase 2 exits at {a2.pc:#x} / {b2.pc:#x}", False
    if a2.regs != b2.regs:
        return f"phase 2 registers differ: {a2.regs} vs {b2.regs}", False
    if a2.writes != b2.writes:
        return "phase 2 memory writes differ", False
    return None, True


# --- the checks ---------------------------------------------------------------------------------


def emulate(data: bytes, res: RewriteResult) -> Tally:
    orig = Machine(data, scratch_bytes())
    new = Machine(res.data, scratch_bytes(), res)
    tally = Tally()
    for site in res.sites:
        if site.stub_vaddr is not None:
            check_site(orig, new, site, tally)
    return tally


@pytest.fixture(scope="module")
def inputs(build_sample: BuildSample) -> dict[str, str]:
    return {
        "libc.so.6": LIBC32,
        "ld-linux.so.2": LDSO32,
        "hello32-static": str(build_sample("hello32.c", "static32")),
        "hello32-dynamic": str(build_sample("hello32.c", "dynamic32")),
        "sites32": str(build_sample("sites32.S", "nostdlib32")),
    }


@pytest.mark.parametrize(
    "name", ["libc.so.6", "ld-linux.so.2", "hello32-static", "hello32-dynamic", "sites32"]
)
def test_every_site_behaves_like_the_original(inputs: dict[str, str], name: str) -> None:
    data, res = rewritten(inputs[name])
    tally = emulate(data, res)
    assert tally.problems == []
    assert tally.sites == res.patched_sites > 0
    # Random pointers make some displaced loads fault; every site must still run clean at least
    # once, or the check would prove nothing about it.
    assert tally.never_clean == []
    # Only §4.3's raw jmp-onto-P shape skips phase 2 (the static sample's exit loop, _exit in
    # sites32); libc.so.6 and ld.so have none.
    loops = [s.address for s in res.sites if s.strategy is Strategy.BEFORE_AND_AFTER]
    assert set(tally.phase1_only) <= set(loops)
    if name in ("hello32-static", "sites32"):
        assert len(tally.phase1_only) == 1


# The quirk vector displaces an `int 0x81`, which unicorn cannot run past: left out here.
@pytest.mark.parametrize(
    "source", [v.values[0] for v in VECTORS if v.id != "b-code-equality-quirk"]
)
def test_vectors_behave_like_the_original(source: str) -> None:
    elf = tiny_elf32(asm(source))
    res = rewrite_elf(elf)
    tally = emulate(elf, res)
    assert tally.problems == [] and tally.never_clean == []
    assert tally.sites == 1
