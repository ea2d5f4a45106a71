"""Semantic equivalence of every patched site, by emulation with unicorn.

For each patched site of libc.so.6, ld.so and the samples, in both ABIs, the original image and
the rewritten image (plus its blob) are mapped once, each in its own emulator, with identical
scratch memory. Per site, several seeded random states (GPRs pointing into the scratch region or
holding small or arbitrary numbers, random flags, XMM registers, FS/GS bases) are run twice:

phase 1  original: window start → the syscall.  rewritten: window start → the runtime callback
         (the slot holds the address of a page of ``hlt``). At that point every register the ABI
         defines must match (redzone: RSP − 128, RCX = continuation, R11 = restart address;
         resume: RCX = resume PC just after ``FF 25``), all others and RFLAGS must be equal, and
         both must have made the same memory writes.
phase 2  the callback "returns" a random RAX (redzone: RSP += 128) to RCX; the original resumes
         after the syscall with the same RAX (RCX/R11 as the kernel leaves them). Both run until
         they leave the window / the stub: same exit address, same registers except RCX and R11,
         same memory writes.

A state whose displaced instructions fault counts only if both emulations fault in the same way:
same error, same faulting data address, and the same original instruction (stub addresses are
mapped back to the instruction they were copied from). Memory is restored from an undo log after
each state, so no emulator is rebuilt per site.

The micro-cases at the end run the vectors of spec/stub-abi.md and reference §5.7 (and a few
more shapes), written as assembly through keystone, through the same machinery.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_WRITE,
    UC_MODE_64,
    UC_PROT_ALL,
    Uc,
    UcError,
)
from unicorn import x86_const as X

from rewriter import Abi, RewriteResult, Site, Strategy, rewrite_elf
from tests.conftest import BuildSample
from tests.elfbuild import CODE_VADDR, SLOT, tiny_elf
from tests.independent_elf import PAGE, align, read_elf
from tests.test_rewriter_capstone import ABIS, BINARIES, real_binaries

GPRS = {
    "rax": X.UC_X86_REG_RAX,
    "rbx": X.UC_X86_REG_RBX,
    "rcx": X.UC_X86_REG_RCX,
    "rdx": X.UC_X86_REG_RDX,
    "rsi": X.UC_X86_REG_RSI,
    "rdi": X.UC_X86_REG_RDI,
    "rbp": X.UC_X86_REG_RBP,
    "rsp": X.UC_X86_REG_RSP,
    **{f"r{n}": getattr(X, f"UC_X86_REG_R{n}") for n in range(8, 16)},
}
OTHER = {
    "rflags": X.UC_X86_REG_RFLAGS,
    "fs_base": X.UC_X86_REG_FS_BASE,
    "gs_base": X.UC_X86_REG_GS_BASE,
    **{f"xmm{n}": getattr(X, f"UC_X86_REG_XMM{n}") for n in range(16)},
}
ALL_REGS = {**GPRS, **OTHER}
REG_IDS = list(ALL_REGS.values())

SCRATCH = 0x7000_0000  # stack, heap and TLS for the random states; far from every image
SCRATCH_SIZE = 0x40_0000
CALLBACK = 0x6000_0000  # a page of hlt: the slot points here; reaching it ends phase 1
UNTIL = CALLBACK + 0x800  # an address emu_start never reaches; the code hook does the stopping
MAX_STEPS = 512
CS = Cs(CS_ARCH_X86, CS_MODE_64)  # the independent decoder, for where a syscall ends
REDZONE = 128
# Where the displaced instructions begin in an "after" stub: the entry sequence's length.
AFTER_ENTRY = {Abi.REDZONE: 5 + 7 + 7 + 6, Abi.RESUME: 7 + 6}
FLAG_BITS = (0x1, 0x4, 0x10, 0x40, 0x80, 0x800)  # CF PF AF ZF SF OF
DF = 0x400
STATES_PER_SITE = 3  # fault-free states wanted per site
MAX_TRIES = 12  # states drawn per site at most, to find those fault-free ones

Ranges = list[tuple[int, int]]


class Fault(NamedTuple):
    error: object  # unicorn's error number, or "runaway"
    bad_access: tuple[int, int] | None  # (access kind, address) of an invalid memory access
    pc: int  # the instruction that faulted


@dataclass
class Stop:
    """How one emulated stretch ended."""

    pc: int | None  # first address outside the allowed ranges (None after a fault)
    fault: Fault | None
    writes: list[tuple[int, int, int]]  # (address, size, value) in program order
    regs: dict[str, int] = field(default_factory=dict)


class Machine:
    """One unicorn with an ELF's PT_LOADs at their link addresses, scratch memory and, for a
    rewritten ELF, its trampoline blob with the slot pointing at the ``hlt`` page."""

    def __init__(self, data: bytes, scratch: bytes, res: RewriteResult | None = None) -> None:
        # Any: Uc() returns an arch subclass whose batch register calls the stubs do not declare.
        self.uc: Any = Uc(UC_ARCH_X86, UC_MODE_64)
        uc = self.uc
        elf = read_elf(data)
        pages: set[int] = set()
        for p in elf.loads:
            pages.update(range(p.vaddr // PAGE, align(p.vaddr + p.memsz, PAGE) // PAGE))
        for lo, hi in _runs(sorted(pages)):
            uc.mem_map(lo * PAGE, (hi - lo) * PAGE, UC_PROT_ALL)
        for p in elf.loads:
            uc.mem_write(p.vaddr, data[p.offset : p.offset + p.filesz])
        if res is not None:
            t = res.trailer
            assert t is not None
            uc.mem_map(t.vaddr, align(t.size, PAGE), UC_PROT_ALL)
            uc.mem_write(t.vaddr, data[t.file_offset : t.file_offset + t.size])
            uc.mem_write(t.vaddr, struct.pack("<Q", CALLBACK))  # what the loader does
        uc.mem_map(CALLBACK, PAGE, UC_PROT_ALL)
        uc.mem_write(CALLBACK, b"\xf4" * PAGE)
        uc.mem_map(SCRATCH, SCRATCH_SIZE, UC_PROT_ALL)
        uc.mem_write(SCRATCH, scratch)
        self.allowed: Ranges = []
        self.steps = 0
        self.exit_pc: int | None = None
        self.last_pc = 0
        self.bad: tuple[int, int] | None = None
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
        if self.steps > MAX_STEPS:  # a displaced loop that never ends: report, don't hang
            uc.emu_stop()

    def _on_write(self, uc: Uc, _access: int, addr: int, size: int, value: int, _d: object) -> None:
        self.undo.append((addr, bytes(uc.mem_read(addr, size))))
        self.writes.append((addr, size, value & ((1 << (8 * size)) - 1)))

    def _on_invalid(self, _uc: Uc, access: int, addr: int, _s: int, _v: int, _d: object) -> bool:
        self.bad = (access, addr)
        return False  # let unicorn raise: the fault is the result

    def set_regs(self, regs: dict[str, int]) -> None:
        self.uc.reg_write_batch([(ALL_REGS[k], v) for k, v in regs.items()])

    def regs(self) -> dict[str, int]:
        return dict(zip(ALL_REGS, self.uc.reg_read_batch(REG_IDS), strict=True))

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(addr, size))

    def run(self, begin: int, allowed: Ranges) -> Stop:
        """Execute from ``begin`` until the first instruction outside ``allowed``."""
        self.allowed, self.steps, self.exit_pc, self.bad = allowed, 0, None, None
        self.last_pc = begin
        self.writes = []
        if not any(lo <= begin < hi for lo, hi in allowed):
            return Stop(begin, None, [], self.regs())
        try:
            self.uc.emu_start(begin, UNTIL)
        except UcError as e:
            return Stop(None, Fault(e.errno, self.bad, self.last_pc), self.writes, self.regs())
        if self.exit_pc is None:
            return Stop(None, Fault("runaway", None, self.last_pc), self.writes, self.regs())
        return Stop(self.exit_pc, None, self.writes, self.regs())

    def restore(self) -> None:
        """Undo every memory write since the last restore, newest first."""
        for addr, old in reversed(self.undo):
            self.uc.mem_write(addr, old)
        self.undo = []


def _runs(pages: list[int]) -> Iterable[tuple[int, int]]:
    """Consecutive page numbers grouped as [first, last + 1)."""
    start = prev = pages[0]
    for p in pages[1:]:
        if p != prev + 1:
            yield start, prev + 1
            start = p
        prev = p
    yield start, prev + 1


def scratch_bytes() -> bytes:
    return random.Random(0x5C7A7C4).randbytes(SCRATCH_SIZE)


def random_state(rng: random.Random) -> dict[str, int]:
    def value() -> int:
        kind = rng.random()
        if kind < 0.6:  # a pointer into the middle of scratch: memory operands resolve
            return SCRATCH + 0x10_0000 + (rng.randrange(0x20_0000) & ~0xF)
        if kind < 0.85:  # a small number: fits an index, a length, a syscall number
            return rng.randrange(256)
        return rng.getrandbits(64)

    state = {name: value() for name in GPRS}
    state["rsp"] = SCRATCH + 0x10_0000 + (rng.randrange(0x20_0000) & ~0xF) - 8
    state["fs_base"] = SCRATCH + 0x20_0000 + (rng.randrange(0x1000) & ~0xF)
    state["gs_base"] = SCRATCH + 0x28_0000 + (rng.randrange(0x1000) & ~0xF)
    flags = 0x2
    for bit in FLAG_BITS:
        flags |= bit if rng.random() < 0.5 else 0
    state["rflags"] = flags | (DF if rng.random() < 0.125 else 0)
    for n in range(16):
        state[f"xmm{n}"] = rng.getrandbits(128)
    return state


def return_value(rng: random.Random) -> int:
    """A plausible syscall result: small, an errno, or anything."""
    pick = rng.random()
    if pick < 0.4:
        return rng.randrange(0x1000)
    if pick < 0.7:
        return (1 << 64) - rng.randrange(1, 4096)
    return rng.getrandbits(64)


# --- one site --------------------------------------------------------------------------------


def after_syscall(orig: Machine, sc: int) -> int:
    """Where the original syscall instruction ends, by capstone: 2 bytes, or 3 with a prefix."""
    insn = next(CS.disasm(orig.read(sc, 15), sc, 1))
    assert insn.mnemonic == "syscall", insn.mnemonic
    return sc + insn.size


def to_original(pc: int, site: Site, abi: Abi, nxt: int) -> int:
    """Map an address inside a stub's copy of the displaced code to the original instruction."""
    sc, (ws, we), stub = site.address, site.window, site.stub_vaddr or 0
    if site.strategy is Strategy.BEFORE:
        copy, orig, n = stub, ws, sc - ws
    else:
        copy, orig, n = stub + AFTER_ENTRY[abi], nxt, we - nxt
    return orig + (pc - copy) if copy <= pc < copy + n else pc


def compare_faults(a: Stop, b: Stop, site: Site, abi: Abi, nxt: int) -> str | None:
    if a.fault is None or b.fault is None:
        return f"only one faulted: original {a.fault}, rewritten {b.fault}"
    mapped = b.fault._replace(pc=to_original(b.fault.pc, site, abi, nxt))
    if a.fault != mapped:
        return f"different faults: original {a.fault}, rewritten {mapped} (mapped back)"
    if a.writes != b.writes:
        return "different writes before the fault"
    return None


def compare_state(a: Stop, b: Stop, ma: Machine, mb: Machine, skip: set[str]) -> list[str]:
    diffs = [
        f"{k}: original {a.regs[k]:#x}, rewritten {b.regs[k]:#x}"
        for k in ALL_REGS
        if k not in skip and a.regs[k] != b.regs[k]
    ]
    if a.writes != b.writes:
        diffs.append(f"writes differ: original {a.writes[:4]}, rewritten {b.writes[:4]}")
    for addr, size, _ in a.writes:  # stores wider than 8 bytes: compare the memory itself
        if ma.read(addr, size) != mb.read(addr, size):
            diffs.append(f"memory at {addr:#x} differs")
    return diffs


@dataclass
class Tally:
    sites: int = 0
    states: int = 0
    clean: int = 0  # states that ran both phases without a fault
    faulted: int = 0  # states that faulted identically in both emulations
    never_clean: list[int] = field(default_factory=list)  # sites with no fault-free state
    problems: list[str] = field(default_factory=list)


def check_site(orig: Machine, new: Machine, site: Site, abi: Abi, slot: int, tally: Tally) -> None:
    sc = site.address
    rng = random.Random(f"{abi.value}:{sc:#x}")
    clean = 0
    tally.sites += 1
    for _ in range(MAX_TRIES):
        if clean >= STATES_PER_SITE:
            break
        state = random_state(rng)
        tally.states += 1
        problem, ok = _one_state(orig, new, site, abi, slot, state, rng)
        orig.restore()
        new.restore()
        if problem:
            tally.problems.append(f"site {sc:#x}: {problem}")
            return
        clean += ok
        tally.clean += ok
        tally.faulted += not ok
    if clean == 0:
        tally.never_clean.append(sc)


def _one_state(
    orig: Machine,
    new: Machine,
    site: Site,
    abi: Abi,
    slot: int,
    state: dict[str, int],
    rng: random.Random,
) -> tuple[str | None, bool]:
    """Run both phases from ``state``. Returns (problem, ran without a fault)."""
    sc, (ws, we), stub = site.address, site.window, site.stub_vaddr or 0
    stub_range = (stub, stub + site.stub_size)
    before = site.strategy is Strategy.BEFORE
    nxt = after_syscall(orig, sc)
    # Phase 1: to the syscall / to the callback.
    orig.set_regs(state)
    new.set_regs(state)
    a = orig.run(ws, [(ws, sc)])
    b = new.run(ws, [(ws, we), stub_range])
    if a.fault or b.fault:
        return compare_faults(a, b, site, abi, nxt), False
    if a.pc != sc or b.pc != CALLBACK:
        return f"phase 1 ended at {a.pc:#x} / {b.pc:#x}, expected {sc:#x} / callback", False
    skip = {"rsp", "rcx", "r11"}
    diffs = compare_state(a, b, orig, new, skip)
    rcx, r11, rsp = b.regs["rcx"], b.regs["r11"], b.regs["rsp"]
    if abi is Abi.REDZONE:
        want_rcx = nxt if before else stub_range[0] + AFTER_ENTRY[abi]
        # R11 = restart address: the stub's entry sequence (its last 25 bytes) in strategy (a),
        # the call-site jump in (b) (nothing was displaced before the syscall).
        want_r11 = stub_range[1] - 25 if before else sc
        if (rsp, rcx, r11) != (a.regs["rsp"] - REDZONE, want_rcx, want_r11):
            diffs.append(f"rsp/rcx/r11 {rsp:#x}/{rcx:#x}/{r11:#x} at the callback")
    else:
        jmp = new.read(rcx - 6, 6) if stub_range[0] + 6 <= rcx <= stub_range[1] else b""
        resolves = jmp[:2] == b"\xff\x25" and rcx + struct.unpack("<i", jmp[2:])[0] == slot
        if rsp != a.regs["rsp"] or not resolves:
            diffs.append(f"rsp {rsp:#x}, rcx {rcx:#x} (bytes before it {jmp.hex()})")
    if diffs:
        return "phase 1: " + "; ".join(diffs[:4]), False

    # Phase 2: the callback returns a value; the original's kernel did the same.
    rax = return_value(rng)
    orig.set_regs({"rax": rax, "rcx": nxt, "r11": a.regs["rflags"]})
    new.set_regs({"rax": rax, "rsp": rsp + (REDZONE if abi is Abi.REDZONE else 0)})
    a = orig.run(nxt, [(nxt, we)])
    b = new.run(rcx, [stub_range])
    if a.fault or b.fault:
        return compare_faults(a, b, site, abi, nxt), False
    if a.pc != b.pc or (before and a.pc != nxt):
        return f"phase 2 ended at {a.pc:#x} / {b.pc:#x}", False
    diffs = compare_state(a, b, orig, new, {"rcx", "r11"})
    if diffs:
        return "phase 2: " + "; ".join(diffs[:4]), False
    return None, True


def emulate_all(data: bytes, res: RewriteResult, abi: Abi, orig: Machine) -> Tally:
    assert res.trailer is not None
    new = Machine(res.data, scratch_bytes(), res)
    tally = Tally()
    for site in res.sites:
        if site.stub_vaddr is not None:
            check_site(orig, new, site, abi, res.trailer.vaddr, tally)
    return tally


# --- real binaries ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def original_machine(path: str) -> Machine:
    with open(path, "rb") as f:
        return Machine(f.read(), scratch_bytes())


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
@pytest.mark.parametrize("name", BINARIES)
def test_every_site_is_equivalent(name: str, abi: Abi, build_sample: BuildSample) -> None:
    path = real_binaries(build_sample)[name]
    with open(path, "rb") as f:
        data = f.read()
    res = rewrite_elf(data, abi=abi)
    tally = emulate_all(data, res, abi, original_machine(path))
    print(
        f"\n{name} [{abi.value}]: emulated {tally.sites} of {res.patched_sites} patched sites, "
        f"{tally.states} states: {tally.clean} fault-free, {tally.faulted} identical faults; "
        f"sites without a fault-free state: {[hex(a) for a in tally.never_clean]}"
    )
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert tally.sites == res.patched_sites > 0
    # Faults may not hide whole sites: every site ran fault-free at least once.
    assert not tally.never_clean


# --- micro-cases: the published vectors and a few more shapes, from keystone assembly ---------

KS = Ks(KS_ARCH_X86, KS_MODE_64)

# (assembly at 0x401000, the vector's input bytes when the case is a published vector)
MICRO_CASES = [
    ("nop; nop; nop; syscall; ret", "909090 0f05 c3"),
    ("syscall; cmp rax, -4095; ret", "0f05 483d01f0ffff c3"),
    ("mov eax, dword ptr [rip + 0x100]; syscall; ret", "8b0500010000 0f05 c3"),
    ("syscall; mov qword ptr [rip + 0x200], rax; ret", "0f05 488905 00020000 c3"),
    ("syscall; jmp 0x401100", "0f05 e9f9000000"),
    ("mov r10, rcx; mov eax, 0x101; syscall; ret", None),
    ("mov rdi, qword ptr [rsp + 8]; syscall; ret", None),
    ("lea rsi, [rip - 0x40]; mov eax, edi; syscall; ret", None),
    ("syscall; jne 0x401100; ret", None),
    ("syscall; push rax; pop rbx; inc rbx; ret", None),
    ("syscall; movdqu xmmword ptr [rsp - 0x20], xmm3; ret", None),
    ("mov dword ptr [rip + 0x100], 0x12345678; syscall; ret", None),
    ("movdqu xmm0, xmmword ptr [rip + 0x80]; syscall; ret", None),
    ("syscall; cmp byte ptr [rip + 0x100], 1; ret", None),
    ("syscall; mov word ptr [rip + 0x100], 0x1234; ret", None),
    # Prefixed syscalls are 3 bytes: the window must end after the whole instruction.
    ("mov eax, 0x3c; mov edi, 0; .byte 0x66; syscall; ret", None),
    (".byte 0x48; syscall; mov rdx, rax; ret", None),
]


def assemble(text: str, at: int = CODE_VADDR) -> bytes:
    encoding, _ = KS.asm(text, at)
    return bytes(encoding or [])


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
@pytest.mark.parametrize(("asm", "vector"), MICRO_CASES, ids=[c[0] for c in MICRO_CASES])
def test_micro_case(asm: str, vector: str | None, abi: Abi) -> None:
    code = assemble(asm)
    if vector is not None:
        assert code == bytes.fromhex(vector.replace(" ", "")), "keystone must give the vector"
    data = tiny_elf(code + b"\xcc" * 0x200)  # room for the targets the cases jump to or touch
    res = rewrite_elf(data, abi=abi)
    assert res.trailer is not None and res.trailer.vaddr == SLOT
    assert res.patched_sites == 1
    tally = emulate_all(data, res, abi, Machine(data, scratch_bytes()))
    assert not tally.problems, "\n".join(tally.problems)
    assert tally.sites == 1 and tally.clean >= STATES_PER_SITE


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_displaced_call_pushes_a_stub_address(abi: Abi) -> None:
    """Reference §5.3 lets a ``call`` be the last displaced instruction. Emulation pins the one
    observable difference: the return address pushed is the stub's jump back to the window end,
    not the window end itself. Everything else, and where control goes, is the same."""
    code = assemble("syscall; call 0x401100; ret")
    data = tiny_elf(code + b"\xcc" * 0x200)
    res = rewrite_elf(data, abi=abi)
    (site,) = res.sites
    assert site.strategy is Strategy.AFTER and site.stub_vaddr is not None
    sc, (_, we) = site.address, site.window
    orig, new = Machine(data, scratch_bytes()), Machine(res.data, scratch_bytes(), res)
    state = random_state(random.Random(7))
    orig.set_regs(state)
    new.set_regs(state)
    new.run(sc, [site.window, (site.stub_vaddr, site.stub_vaddr + site.stub_size)])
    back = new.regs()["rcx"]
    if abi is Abi.REDZONE:
        new.set_regs({"rsp": new.regs()["rsp"] + REDZONE})
    a = orig.run(sc + 2, [(sc + 2, we)])
    b = new.run(back, [(site.stub_vaddr, site.stub_vaddr + site.stub_size)])
    assert a.pc == b.pc == 0x401100
    jump_back = site.stub_vaddr + site.stub_size - 5
    assert a.writes == [(state["rsp"] - 8, 8, we)]
    assert b.writes == [(state["rsp"] - 8, 8, jump_back)]
    assert new.read(jump_back, 5) == b"\xe9" + struct.pack("<i", we - (jump_back + 5))
    assert compare_state(a, b, orig, new, {"rcx", "r11"}) == [
        f"writes differ: original {a.writes}, rewritten {b.writes}",
        f"memory at {state['rsp'] - 8:#x} differs",
    ]


# --- the harness must see a broken stub ---------------------------------------------------------


def _stub_offsets(abi: Abi, strategy: Strategy, moved: int, size: int) -> dict[str, int]:
    """Byte offsets inside a stub (spec/stub-abi.md) of the fields the mutations below flip."""
    if strategy is Strategy.BEFORE:
        k = moved
        if abi is Abi.REDZONE:
            return {"moved disp": 3, "red zone": k + 4, "r11": k + 8, "rcx": k + 15}
        return {"moved disp": 3, "rcx": k + 3, "jump back": size - 4}
    e = AFTER_ENTRY[abi]
    if abi is Abi.REDZONE:
        return {"red zone": 4, "r11": 8, "rcx": 15, "moved disp": e + 3, "jump back": size - 4}
    return {"rcx": 3, "moved disp": e + 3, "jump back": size - 4}


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_harness_catches_mutated_stubs(abi: Abi, build_sample: BuildSample) -> None:
    """Flip one bit in each field of the sites sample's RIP-relative stubs: every flip is caught."""
    path = str(build_sample("sites.S", "nostdlib"))
    with open(path, "rb") as f:
        data = f.read()
    res = rewrite_elf(data, abi=abi)
    assert res.trailer is not None
    t = res.trailer
    orig = Machine(data, scratch_bytes())
    # The first site displaces `lea rsi,[rip+..]; mov eax,edi`, the second `mov [rip+..],rax`.
    for site in [s for s in res.sites if s.stub_vaddr is not None][:2]:
        assert site.stub_vaddr is not None
        moved = site.address - site.window[0] if site.strategy is Strategy.BEFORE else 0
        for field_name, offset in _stub_offsets(abi, site.strategy, moved, site.stub_size).items():
            broken = bytearray(res.data)
            broken[t.file_offset + (site.stub_vaddr - t.vaddr) + offset] ^= 0x01
            new = Machine(bytes(broken), scratch_bytes(), res)
            tally = Tally()
            check_site(orig, new, site, abi, t.vaddr, tally)
            assert tally.problems, f"flipping {field_name} of the stub for {site.address:#x}"
    if abi is Abi.REDZONE:
        # Same RSP, other flags: `add rsp, -0x80; nop` in place of `lea rsp, [rsp-0x80]`.
        site = next(s for s in res.sites if s.strategy is Strategy.AFTER)
        assert site.stub_vaddr is not None
        at = t.file_offset + (site.stub_vaddr - t.vaddr)
        assert res.data[at : at + 5] == bytes.fromhex("488d642480")
        broken = bytearray(res.data)
        broken[at : at + 5] = bytes.fromhex("4883c48090")
        tally = Tally()
        check_site(orig, Machine(bytes(broken), scratch_bytes(), res), site, abi, t.vaddr, tally)
        assert any("rflags" in p for p in tally.problems), tally.problems


# --- restart (SA_RESTART) ------------------------------------------------------------------------

# stub-abi.md sets R11 to the window start for strategy (a), so a restart would re-run the
# displaced instructions on registers they already changed (add rdi,8; xor sil,0x80 in libc's
# futex paths; mov rdx,rsi + xor esi,esi; sub rsp,8). The rewriter points R11 at the stub's own
# entry sequence instead; these tests hold it to "a restart re-enters with the same registers".
RESTART_ABIS = [Abi.REDZONE, Abi.RESUME]


def restart_problems(data: bytes, abi: Abi) -> tuple[int, list[str]]:
    """Enter the callback, then restart the syscall the way the ABI says; the callback must be
    entered again with exactly the same registers (the restarted syscall sees the same call)."""
    res = rewrite_elf(data, abi=abi)
    assert res.trailer is not None
    new = Machine(res.data, scratch_bytes(), res)
    problems: list[str] = []
    checked = 0
    for site in res.sites:
        if site.stub_vaddr is None:
            continue
        allowed = [site.window, (site.stub_vaddr, site.stub_vaddr + site.stub_size)]
        rng = random.Random(f"restart:{site.address:#x}")
        for _ in range(MAX_TRIES):
            new.set_regs(random_state(rng))
            first = new.run(site.window[0], allowed)
            if first.fault is None:
                break
            new.restore()
        else:
            continue
        checked += 1
        entry = first.regs
        if abi is Abi.REDZONE:  # restore the syscall registers, RSP += 128, jump to R11
            new.set_regs({"rsp": entry["rsp"] + REDZONE})
            again = new.run(entry["r11"], allowed)
        else:  # RIP := RCX − 6, the jmp [slot]
            again = new.run(entry["rcx"] - 6, allowed)
        new.restore()
        diff = [k for k in ALL_REGS if again.fault or again.regs[k] != entry[k]]
        if again.fault or again.pc != CALLBACK or diff:
            problems.append(f"{site.address:#x}: {again.fault or diff}")
    return checked, problems


@pytest.mark.parametrize("abi", RESTART_ABIS, ids=lambda a: a.value)
def test_restart_reenters_with_the_same_registers_libc(abi: Abi) -> None:
    path = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    with open(path, "rb") as f:
        data = f.read()
    checked, problems = restart_problems(data, abi)
    print(f"\nlibc.so.6 [{abi.value}]: restart checked at {checked} sites, {len(problems)} differ")
    assert checked > 500
    assert not problems, f"{len(problems)} sites restart differently:\n" + "\n".join(problems)


@pytest.mark.parametrize("abi", RESTART_ABIS, ids=lambda a: a.value)
def test_restart_minimal_case(abi: Abi) -> None:
    # `add rdi, 8` (4 bytes) + syscall: strategy "before" displaces the add.
    data = tiny_elf(assemble("add rdi, 8; syscall; ret"))
    checked, problems = restart_problems(data, abi)
    assert checked == 1
    assert not problems, problems
