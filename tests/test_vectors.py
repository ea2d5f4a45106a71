"""The worked vectors of spec/stub-abi.md and reference §5.7, byte for byte, through rewrite_elf.

Inputs are written as assembly (keystone) and checked against the hex bytes the documents give,
so a vector's intent and its encoding can be read side by side. Code sits at 0x401000, the slot
at 0x402000 and the first stub at 0x402008, as in the documents.
"""

from __future__ import annotations

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks

from rewriter import Outcome, Strategy, UnpatchableSyscallsError, read_trailer, rewrite_elf
from tests.elfbuild import CODE_VADDR, SLOT, code_of, tiny_elf

KS = Ks(KS_ARCH_X86, KS_MODE_64)


def asm(text: str, at: int = CODE_VADDR) -> bytes:
    encoding, _ = KS.asm(text, at)
    return bytes(encoding)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def stubs_of(out: bytes) -> bytes:
    t = read_trailer(out)
    assert t is not None and t.vaddr == SLOT
    return out[t.file_offset + 8 : t.file_offset + t.size]


# (assembly, input hex as documented, ABI, patched code, stub bytes)
VECTORS = [
    (
        "nop; nop; nop; syscall; ret",
        "90 90 90 0F 05 C3",
        "redzone",
        "E9 03 10 00 00 C3",
        # stub-abi.md has R11 = rs here (4C 8D 1D E9 EF FF FF); we restart at the stub's entry
        # sequence (0x40200B) so the displaced instructions do not run twice: see
        # test_rewriter_emulation.py::test_restart_minimal_case.
        "90 90 90 48 8D 64 24 80 4C 8D 1D F4 FF FF FF 48 8D 0D E7 EF FF FF FF 25 DC FF FF FF",
    ),
    (
        "syscall; cmp rax, -4095; ret",
        "0F 05 48 3D 01 F0 FF FF C3",
        "redzone",
        "E9 03 10 00 00 90 90 90 C3",
        "48 8D 64 24 80 4C 8D 1D EC EF FF FF 48 8D 0D 06 00 00 00 FF 25 DF FF FF FF "
        "48 3D 01 F0 FF FF E9 DC EF FF FF",
    ),
    (
        "nop; nop; nop; syscall; ret",
        "90 90 90 0F 05 C3",
        "resume",
        "E9 03 10 00 00 C3",
        "90 90 90 48 8D 0D 06 00 00 00 FF 25 E8 FF FF FF E9 E8 EF FF FF",
    ),
    (
        "syscall; cmp rax, -4095; ret",
        "0F 05 48 3D 01 F0 FF FF C3",
        "resume",
        "E9 03 10 00 00 90 90 90 C3",
        "48 8D 0D 06 00 00 00 FF 25 EB FF FF FF 48 3D 01 F0 FF FF E9 E8 EF FF FF",
    ),
    (
        "mov eax, dword ptr [rip + 0x100]; syscall; ret",
        "8B 05 00 01 00 00 0F 05 C3",
        "resume",
        "E9 03 10 00 00 90 90 90 C3",
        "8B 05 F8 F0 FF FF 48 8D 0D 06 00 00 00 FF 25 E5 FF FF FF E9 E8 EF FF FF",
    ),
    (
        "syscall; mov qword ptr [rip + 0x200], rax; ret",
        "0F 05 48 89 05 00 02 00 00 C3",
        "resume",
        "E9 03 10 00 00 90 90 90 90 C3",
        "48 8D 0D 06 00 00 00 FF 25 EB FF FF FF 48 89 05 ED F1 FF FF E9 E8 EF FF FF",
    ),
    (
        "syscall; jmp 0x401100",
        "0F 05 E9 F9 00 00 00",
        "resume",
        "E9 03 10 00 00 90 90",
        "48 8D 0D 06 00 00 00 FF 25 EB FF FF FF E9 E6 F0 FF FF E9 E8 EF FF FF",
    ),
]


@pytest.mark.parametrize(("source", "hexin", "abi", "guest", "stub"), VECTORS)
def test_vector(source: str, hexin: str, abi: str, guest: str, stub: str) -> None:
    code = asm(source)
    assert code == h(hexin), "keystone and the documented encoding disagree"
    res = rewrite_elf(tiny_elf(code), abi=abi)
    assert res.outcome is Outcome.PATCHED
    assert code_of(res.data, len(code)) == h(guest)
    assert stubs_of(res.data) == h(stub)
    assert [s.stub_vaddr for s in res.sites] == [SLOT + 8]


def test_lone_syscall_is_unpatchable_under_every_policy() -> None:
    elf = tiny_elf(asm("syscall"))
    with pytest.raises(UnpatchableSyscallsError, match="0x401000"):
        rewrite_elf(elf)
    trapped = rewrite_elf(elf, unpatchable="trap")
    assert code_of(trapped.data, 2) == h("F1 F4")
    assert trapped.unpatchable == (CODE_VADDR,)
    assert [s.strategy for s in trapped.sites] == [Strategy.TRAPPED]
    kept = rewrite_elf(elf, unpatchable="keep")
    assert code_of(kept.data, 2) == h("0F 05")
    assert kept.unpatchable == (CODE_VADDR,)
    assert kept.data.startswith(elf)


@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_syscall_that_is_a_branch_target_is_not_displaced_backwards(abi: str) -> None:
    # 0x401005 (the syscall) is the target of the jump at 0x401010, so the mov before it cannot
    # be displaced, and the ret after it leaves too few bytes: the site is unpatchable.
    code = asm("mov eax, 60; syscall; ret") + bytes(8) + asm("jmp 0x401005", CODE_VADDR + 0x10)
    assert code[:8] == h("B8 3C 00 00 00 0F 05 C3")
    res = rewrite_elf(tiny_elf(code), abi=abi, unpatchable="trap")
    assert code_of(res.data, 8) == h("B8 3C 00 00 00 F1 F4 C3")
    assert res.unpatchable == (CODE_VADDR + 5,)


@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_first_borrowed_instruction_may_be_a_branch_target(abi: str) -> None:
    # The jump lands on the mov that starts the window: that is fine, the JMP starts there.
    code = asm("mov eax, 60; syscall; ret") + bytes(8) + asm("jmp 0x401000", CODE_VADDR + 0x10)
    res = rewrite_elf(tiny_elf(code), abi=abi)
    assert [s.strategy for s in res.sites] == [Strategy.BEFORE]
    assert res.sites[0].window == (CODE_VADDR, CODE_VADDR + 7)


@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_branch_target_inside_the_window_stops_the_backward_scan(abi: str) -> None:
    # A jump to the second borrowed instruction would land in NOP filler: use the forward window.
    code = asm("nop; nop; nop; syscall; cmp rax, -4095; ret")
    code += bytes(0x20 - len(code)) + asm("jmp 0x401002", CODE_VADDR + 0x20)
    res = rewrite_elf(tiny_elf(code), abi=abi)
    assert [s.strategy for s in res.sites] == [Strategy.AFTER]
    assert res.sites[0].window == (CODE_VADDR + 3, CODE_VADDR + 11)


@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_backward_scan_never_crosses_control_flow(abi: str) -> None:
    code = asm("ret; nop; syscall; cmp rax, -4095; ret")
    res = rewrite_elf(tiny_elf(code), abi=abi)
    assert [s.strategy for s in res.sites] == [Strategy.AFTER]


def test_forward_window_may_not_borrow_a_second_syscall_in_redzone() -> None:
    # resume keeps upstream's behaviour (the second syscall ends up inside the first stub);
    # redzone refuses to displace a syscall, so the first site falls back and the second is
    # patched on its own.
    code = asm("ret; syscall; nop; syscall; ret")
    up = rewrite_elf(tiny_elf(code), abi="resume", unpatchable="keep")
    assert up.sites[0].strategy is Strategy.AFTER and up.sites[0].window[1] == CODE_VADDR + 6
    rz = rewrite_elf(tiny_elf(code), abi="redzone", unpatchable="keep")
    assert [s.strategy for s in rz.sites] == [Strategy.KEPT, Strategy.KEPT]


def test_rip_relative_instruction_that_cannot_move_falls_back() -> None:
    # A rel8 jump displaced into the trampoline cannot reach its target: the after-window fails
    # and the before-window is used instead.
    code = asm("mov eax, 1; syscall; jmp 0x401000")
    res = rewrite_elf(tiny_elf(code), abi="resume")
    assert [s.strategy for s in res.sites] == [Strategy.BEFORE]
