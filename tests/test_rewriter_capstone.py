"""Independent structural check of rewritten ELFs, decoded with capstone (the rewriter uses iced).

For every patched site of libc.so.6, ld.so and the samples, in both ABIs:

* the guest window is one ``jmp`` into the blob followed only by ``nop``s, and no direct branch
  anywhere in the executable sections lands strictly inside it;
* the displaced instructions are whole original instructions around exactly one ``syscall``, and
  (before the syscall) none of them transfers control;
* the stub decodes to exactly the shape of spec/stub-abi.md, with every ``lea``/``jmp`` target
  computed from capstone's operands;
* each displaced instruction in the stub has the original's mnemonic, operands and absolute
  targets (RIP-relative memory and relative branches), and otherwise the original's bytes;
* the stubs tile the blob from vaddr + 8 to its end.

The ELF reading and the capstone sweep here are deliberately separate from the rewriter's own
code; test_rewriter_real.py and test_rewriter_emulation.py reuse them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
from capstone import (
    CS_ARCH_X86,
    CS_GRP_CALL,
    CS_GRP_INT,
    CS_GRP_IRET,
    CS_GRP_JUMP,
    CS_GRP_RET,
    CS_MODE_64,
    Cs,
    CsInsn,
)
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG, X86_REG_RIP

from rewriter import Abi, RewriteResult, Strategy, rewrite_elf
from tests.conftest import BuildSample
from tests.independent_elf import read_elf

SLOT_SIZE = 8
CONTROL_GROUPS = {CS_GRP_JUMP, CS_GRP_CALL, CS_GRP_RET, CS_GRP_INT, CS_GRP_IRET}
# Instructions that end a linear flow but that capstone files under no group.
CONTROL_MNEMONICS = {"ud0", "ud1", "ud2"}
RELATIVE_BRANCHES = {"jmp", "call", "loop", "loope", "loopne", "jrcxz", "jecxz", "xbegin"}
ABIS = [Abi.REDZONE, Abi.RESUME]

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
LDSO = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


# --- capstone --------------------------------------------------------------------------------


def _cs(detail: bool) -> Cs:
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    cs.detail = detail
    cs.skipdata = not detail  # a linear sweep steps over undecodable bytes, like iced does
    return cs


CS_LITE = _cs(detail=False)
CS = _cs(detail=True)


@dataclass(frozen=True)
class Sweep:
    syscalls: tuple[int, ...]  # every address a linear sweep decodes as `syscall`
    targets: frozenset[int]  # every direct branch target (jmp/jcc/call/loop/jrcxz/xbegin)


def branch_target(mnemonic: str, op_str: str) -> int | None:
    """The absolute target of a direct near branch, as capstone prints it; None otherwise."""
    m = mnemonic.split()[-1]  # "bnd jmp" and the like
    if not (m in RELATIVE_BRANCHES or m.startswith("j")):
        return None
    try:
        return int(op_str, 16)
    except ValueError:
        return None  # indirect: a register or memory operand


@functools.lru_cache(maxsize=16)
def sweep(data: bytes) -> Sweep:
    syscalls: list[int] = []
    targets: set[int] = set()
    for s in read_elf(data).texts:
        code = data[s.offset : s.offset + s.size]
        for addr, _size, mnemonic, op_str in CS_LITE.disasm_lite(code, s.addr):
            if mnemonic == "syscall":
                syscalls.append(addr)
            else:
                t = branch_target(mnemonic, op_str)
                if t is not None:
                    targets.add(t)
    return Sweep(tuple(syscalls), frozenset(targets))


def decode(code: bytes, addr: int) -> list[CsInsn]:
    """Decode ``code`` completely; fail unless the instructions cover it exactly."""
    insns = list(CS.disasm(code, addr))
    covered = sum(i.size for i in insns)
    assert covered == len(code), f"capstone decoded {covered} of {len(code)} bytes at {addr:#x}"
    return insns


def is_control_flow(insn: CsInsn) -> bool:
    return bool(CONTROL_GROUPS & set(insn.groups)) or insn.mnemonic in CONTROL_MNEMONICS


def rip_target(insn: CsInsn) -> int | None:
    """Absolute address of the instruction's RIP-relative memory operand, if it has one."""
    for op in insn.operands:
        if op.type == X86_OP_MEM and op.mem.base == X86_REG_RIP:
            return int(insn.address + insn.size + op.mem.disp)
    return None


def branch_imm(insn: CsInsn) -> int | None:
    """Absolute target of a direct branch (capstone gives it as the immediate operand)."""
    if insn.imm_size and branch_target(insn.mnemonic, insn.op_str) is not None:
        return int(insn.operands[0].imm)
    return None


def operand_key(insn: CsInsn) -> list[tuple[object, ...]]:
    """Operands with position-dependent parts replaced by the absolute address they denote."""
    out: list[tuple[object, ...]] = []
    for op in insn.operands:
        if op.type == X86_OP_REG:
            out.append(("reg", op.reg, op.size))
        elif op.type == X86_OP_IMM:
            value = branch_imm(insn) if branch_imm(insn) is not None else op.imm
            out.append(("imm", value, op.size))
        elif op.type == X86_OP_MEM:
            m = op.mem
            disp = rip_target(insn) if m.base == X86_REG_RIP else m.disp
            out.append(("mem", m.segment, m.base, m.index, m.scale, disp, op.size))
        else:
            out.append(("other", op.type))
    return out


def masked_bytes(insn: CsInsn) -> bytes:
    """The encoding with the RIP displacement / relative-branch immediate blanked out."""
    raw = bytearray(insn.bytes)
    if rip_target(insn) is not None:
        raw[insn.disp_offset : insn.disp_offset + insn.disp_size] = bytes(insn.disp_size)
    if branch_imm(insn) is not None:
        raw[insn.imm_offset : insn.imm_offset + insn.imm_size] = bytes(insn.imm_size)
    return bytes(raw)


def assert_same_instruction(orig: CsInsn, moved: CsInsn) -> None:
    where = f"{orig.address:#x} ({orig.mnemonic} {orig.op_str}) moved to {moved.address:#x}"
    assert moved.mnemonic == orig.mnemonic, where
    assert moved.size == orig.size, where
    assert operand_key(moved) == operand_key(orig), where
    assert masked_bytes(moved) == masked_bytes(orig), where
    if rip_target(orig) is None and branch_imm(orig) is None:
        assert moved.bytes == orig.bytes, where  # nothing position-dependent: copied verbatim


# --- rewriting, cached per input -------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def rewritten(path: str, abi: Abi) -> tuple[bytes, RewriteResult]:
    data = Path(path).read_bytes()
    return data, rewrite_elf(data, abi=abi)


def real_binaries(build_sample: BuildSample) -> dict[str, str]:
    """Every input with patched sites: this machine's libc and ld.so, and the samples."""
    return {
        "libc.so.6": LIBC,
        "ld.so": LDSO,
        "hello-static": str(build_sample("hello.c", "static")),
        "hello-static-pie": str(build_sample("hello.c", "static-pie")),
        "hello-dynamic": str(build_sample("hello.c", "dynamic")),
        "sites": str(build_sample("sites.S", "nostdlib")),
    }


BINARIES = ["libc.so.6", "ld.so", "hello-static", "hello-static-pie", "hello-dynamic", "sites"]


# --- the stub shapes of spec/stub-abi.md -------------------------------------------------------


# The entry instructions also have one exact encoding each in spec/stub-abi.md.
LEA_PREFIX = {"rcx": b"\x48\x8d\x0d", "r11": b"\x4c\x8d\x1d"}


def expect_lea_rip(insn: CsInsn, reg: str, target: int) -> None:
    assert insn.mnemonic == "lea" and insn.size == 7, insn
    assert bytes(insn.bytes[:3]) == LEA_PREFIX[reg], insn
    dst, src = insn.operands
    assert dst.type == X86_OP_REG and CS.reg_name(dst.reg) == reg, insn
    assert src.type == X86_OP_MEM and src.mem.base == X86_REG_RIP and src.mem.index == 0, insn
    assert rip_target(insn) == target, f"{insn.mnemonic} {insn.op_str} at {insn.address:#x}"


def expect_redzone_reserve(insn: CsInsn) -> None:
    assert insn.mnemonic == "lea" and bytes(insn.bytes) == b"\x48\x8d\x64\x24\x80", insn
    dst, src = insn.operands
    assert CS.reg_name(dst.reg) == "rsp" and CS.reg_name(src.mem.base) == "rsp", insn
    assert src.mem.index == 0 and src.mem.disp == -0x80, insn


def expect_jmp_slot(insn: CsInsn, slot: int) -> None:
    assert insn.mnemonic == "jmp" and bytes(insn.bytes[:2]) == b"\xff\x25", insn
    (op,) = insn.operands
    assert op.type == X86_OP_MEM and op.size == 8 and op.mem.base == X86_REG_RIP, insn
    assert rip_target(insn) == slot, f"jmp [{rip_target(insn)}] != slot {slot:#x}"


def expect_jmp_to(insn: CsInsn, target: int) -> None:
    assert insn.mnemonic == "jmp" and insn.size == 5 and insn.bytes[0] == 0xE9, insn
    assert branch_imm(insn) == target, f"jmp {insn.op_str} at {insn.address:#x} != {target:#x}"


def check_stub(
    abi: Abi,
    strategy: Strategy,
    stub: list[CsInsn],
    moved_from: list[CsInsn],
    sc: int,
    window_end: int,
    ws: int,
    slot: int,
) -> None:
    """``stub`` must be exactly the ABI's shape around re-encoded copies of ``moved_from``."""
    n = len(moved_from)
    if strategy is Strategy.BEFORE:
        tail = {Abi.REDZONE: 4, Abi.RESUME: 3}[abi]
        assert len(stub) == n + tail, [f"{i.mnemonic} {i.op_str}" for i in stub]
        moved, entry = stub[:n], stub[n:]
        if abi is Abi.REDZONE:
            expect_redzone_reserve(entry[0])
            # restart: the stub's own entry sequence, so the moved code does not run twice
            expect_lea_rip(entry[1], "r11", entry[0].address)
            expect_lea_rip(entry[2], "rcx", sc + 2)  # continue after the syscall
            expect_jmp_slot(entry[3], slot)
        else:
            expect_lea_rip(entry[0], "rcx", entry[2].address)  # resume PC right after jmp [slot]
            expect_jmp_slot(entry[1], slot)
            expect_jmp_to(entry[2], sc + 2)
    else:
        head = {Abi.REDZONE: 4, Abi.RESUME: 2}[abi]
        assert len(stub) == head + n + 1, [f"{i.mnemonic} {i.op_str}" for i in stub]
        entry, moved = stub[:head], stub[head : head + n]
        after_entry = stub[head].address
        if abi is Abi.REDZONE:
            expect_redzone_reserve(entry[0])
            expect_lea_rip(entry[1], "r11", sc)  # restart: the call-site jmp, at the syscall
            expect_lea_rip(entry[2], "rcx", after_entry)  # the runtime returns to the moved code
            expect_jmp_slot(entry[3], slot)
        else:
            expect_lea_rip(entry[0], "rcx", after_entry)
            expect_jmp_slot(entry[1], slot)
        expect_jmp_to(stub[-1], window_end)
    for orig, new in zip(moved_from, moved, strict=True):
        assert_same_instruction(orig, new)


def check_binary(path: str, abi: Abi) -> int:
    """Run every structural check on one rewritten binary; return the number of sites checked."""
    data, res = rewritten(path, abi)
    out = res.data
    assert res.trailer is not None and res.trailer.size > SLOT_SIZE
    slot = res.trailer.vaddr
    blob_off = res.trailer.file_offset
    blob_end = slot + res.trailer.size
    elf = read_elf(data)
    targets = sweep(data).targets
    patched = sorted(
        (s for s in res.sites if s.stub_vaddr is not None), key=lambda s: s.stub_vaddr or 0
    )
    cursor = slot + SLOT_SIZE
    for site in patched:
        sc, (ws, we), stub_at = site.address, site.window, site.stub_vaddr
        assert stub_at == cursor, f"stub of {sc:#x} at {stub_at:#x}, previous ended {cursor:#x}"
        cursor += site.stub_size

        # The guest window: jmp → this stub, then NOPs only.
        guest = decode(elf.bytes_at(out, ws, we - ws), ws)
        expect_jmp_to(guest[0], stub_at)
        assert all(i.mnemonic == "nop" and i.bytes == b"\x90" for i in guest[1:]), hex(sc)
        inside = sorted(t for t in targets if ws < t < we)
        assert not inside, f"branch targets {[hex(t) for t in inside]} inside window of {sc:#x}"

        # The original window: whole instructions, exactly one syscall, at sc.
        orig = decode(elf.bytes_at(data, ws, we - ws), ws)
        syscalls = [i for i in orig if i.mnemonic == "syscall"]
        assert [i.address for i in syscalls[:1]] == [sc] and we - ws >= 5, hex(sc)
        if site.strategy is Strategy.BEFORE:
            assert orig[-1].address == sc, f"before-window of {sc:#x} must end with the syscall"
            moved_from = orig[:-1]
            assert not any(is_control_flow(i) for i in moved_from), hex(sc)
        else:
            assert site.strategy is Strategy.AFTER and orig[0].address == sc, hex(sc)
            moved_from = orig[1:]
            # Only the last displaced instruction may transfer control (reference §5.3).
            assert not any(is_control_flow(i) for i in moved_from[:-1]), hex(sc)
        if abi is Abi.REDZONE:
            assert len(syscalls) == 1, f"redzone must not displace a syscall ({sc:#x})"

        stub_bytes = out[blob_off + (stub_at - slot) : blob_off + (stub_at - slot) + site.stub_size]
        check_stub(abi, site.strategy, decode(stub_bytes, stub_at), moved_from, sc, we, ws, slot)
    assert cursor == blob_end, f"stubs end at {cursor:#x}, blob ends at {blob_end:#x}"
    assert out[blob_off : blob_off + SLOT_SIZE] == bytes(SLOT_SIZE), "the slot is written as 0"
    return len(patched)


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
@pytest.mark.parametrize("name", BINARIES)
def test_structure(name: str, abi: Abi, build_sample: BuildSample) -> None:
    path = real_binaries(build_sample)[name]
    data, res = rewritten(path, abi)
    checked = check_binary(path, abi)
    assert checked == res.patched_sites == len(sweep(data).syscalls) > 0


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_stubs_follow_site_order(abi: Abi) -> None:
    """Reference §5.6: stubs are appended in section order, by address within a section."""
    _, res = rewritten(LIBC, abi)
    by_address = [s.stub_vaddr or 0 for s in sorted(res.sites, key=lambda s: s.address)]
    assert by_address == sorted(by_address)


def test_shape_checker_rejects_a_wrong_stub() -> None:
    """The checker must fail on a stub one bit off (guards against a vacuous pass)."""
    _, res = rewritten(LIBC, Abi.REDZONE)
    site = next(s for s in res.sites if s.strategy is Strategy.BEFORE)
    data = Path(LIBC).read_bytes()
    elf = read_elf(data)
    assert res.trailer is not None and site.stub_vaddr is not None
    ws, we = site.window
    orig = decode(elf.bytes_at(data, ws, we - ws), ws)
    at = res.trailer.file_offset + (site.stub_vaddr - res.trailer.vaddr)
    stub = bytearray(res.data[at : at + site.stub_size])
    stub[-1] ^= 0x01  # the slot displacement's high byte: jmp [slot] now points elsewhere
    with pytest.raises(AssertionError):
        check_stub(
            Abi.REDZONE,
            site.strategy,
            decode(bytes(stub), site.stub_vaddr),
            orig[:-1],
            site.address,
            we,
            ws,
            res.trailer.vaddr,
        )
