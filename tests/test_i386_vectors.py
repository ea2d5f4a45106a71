"""i386 rewriting (reference §4) on tiny ELF32 files, byte for byte.

Inputs are written as assembly (keystone, 32-bit) and checked against their hex; every expected
byte was computed by hand from §4.2/§4.3 (rel32 = target − next instruction, d32 = slot − address
of the POP), so a vector reads as intent, encoding and result side by side. Code sits at 0x8049000,
the slot at 0x804a000 and the first stub at 0x804a004, unless a vector says otherwise.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keystone import KS_ARCH_X86, KS_MODE_32, Ks

from rewriter import (
    Outcome,
    RewriteError,
    Strategy,
    UnpatchableSyscallsError,
    check_trailer,
    rewrite_elf,
)
from rewriter.trailer import TrailerState

KS = Ks(KS_ARCH_X86, KS_MODE_32)
BASE = 0x8048000
CODE = 0x8049000
SLOT = 0x804A000
PAGE = 0x1000
STT_NOTYPE, STT_FUNC = 0, 2
SHT_SYMTAB, SHT_DYNSYM = 2, 11


def asm(text: str, at: int = CODE) -> bytes:
    encoding, _ = KS.asm(text, at)
    return bytes(encoding)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def tiny_elf32(
    code: bytes,
    *,
    code_vaddr: int = CODE,
    load_end: int | None = None,
    symbols: tuple[tuple[str, int, int], ...] = (),
    symtab_type: int = SHT_SYMTAB,
) -> bytes:
    """An ELF32 i386 executable: one RWX PT_LOAD at 0x8048000 mapping the whole file (memsz up
    to ``load_end`` when given), ``code`` at ``code_vaddr`` in a .text section, and optionally a
    symbol table of (name, value, type) entries."""
    code_off = code_vaddr - BASE
    names = [".text", ".shstrtab"] + ([".symtab", ".strtab"] if symbols else [])
    shstrtab = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n, _, _ in symbols)
    symtab = bytes(16)
    pos = 1
    for name, value, typ in symbols:
        symtab += struct.pack("<IIIBBH", pos, value, 0, 0x10 | typ, 0, 1)  # GLOBAL, in .text
        pos += len(name) + 1
    off = code_off + len(code)
    tables = []
    for blob in (shstrtab, symtab if symbols else b"", strtab if symbols else b""):
        off = (off + 3) // 4 * 4
        tables.append(off)
        off += len(blob)
    shoff = (off + 3) // 4 * 4
    nsec = 5 if symbols else 3
    total = shoff + nsec * 40
    memsz = max(total, (load_end or 0) - BASE)
    out = bytearray(total)
    out[0:16] = b"\x7fELF\x01\x01\x01" + bytes(9)
    out[16:52] = struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, code_vaddr, 52, shoff, 0, 52, 32, 1, 40,
                             nsec, 2)  # fmt: skip
    out[52:84] = struct.pack("<IIIIIIII", 1, 0, BASE, BASE, total, memsz, 7, PAGE)
    out[code_off : code_off + len(code)] = code
    out[tables[0] : tables[0] + len(shstrtab)] = shstrtab
    sh = bytes(40)
    sh += struct.pack("<IIIIIIIIII", 1, 1, 6, code_vaddr, code_off, len(code), 0, 0, 16, 0)
    sh += struct.pack("<IIIIIIIIII", 7, 3, 0, 0, tables[0], len(shstrtab), 0, 0, 1, 0)
    if symbols:
        out[tables[1] : tables[1] + len(symtab)] = symtab
        out[tables[2] : tables[2] + len(strtab)] = strtab
        sh += struct.pack("<IIIIIIIIII", 17, symtab_type, 0, 0, tables[1], len(symtab), 4, 1, 4,
                          16)  # fmt: skip
        sh += struct.pack("<IIIIIIIIII", 25, 3, 0, 0, tables[2], len(strtab), 0, 0, 1, 0)
    out[shoff:total] = sh
    return bytes(out)


def code_at(elf: bytes, vaddr: int, size: int) -> bytes:
    return elf[vaddr - BASE : vaddr - BASE + size]


def trailer32(out: bytes) -> tuple[bytes, int, int, int]:
    magic, offset, vaddr, size = struct.unpack("<8sIII", out[-20:])
    return magic, offset, vaddr, size


def blob_of(out: bytes) -> bytes:
    _, offset, _, size = trailer32(out)
    return out[offset : offset + size]


# (assembly, input hex, patched code hex, stub hex, strategy)
VECTORS = [
    pytest.param(
        "mov eax, 1; int 0x80; ret",
        "B8 01 00 00 00 CD 80 C3",
        "E9 FF 0F 00 00 90 90 C3",
        # mov | push eax; call +0; pop eax (at 0x804a00f); call [eax-0xf] | jmp 0x8049007
        "B8 01 00 00 00 50 E8 00 00 00 00 58 FF 90 F1 FF FF FF E9 EC EF FF FF",
        Strategy.BEFORE,
        id="a-int80",
    ),
    pytest.param(
        "call dword ptr gs:[0x10]; ret",
        "65 FF 15 10 00 00 00 C3",
        "E9 FF 0F 00 00 90 90 C3",
        # strategy (a) starting with the site itself: nothing borrowed, jump back to 0x8049007
        "50 E8 00 00 00 00 58 FF 90 F6 FF FF FF E9 F1 EF FF FF",
        Strategy.BEFORE,
        id="a-call-gs-alone",
    ),
    pytest.param(
        "mov eax, edx; int 0x80; cmp eax, 0xfffff000; jbe 0x8049000; hlt",
        "89 D0 CD 80 3D 00 F0 FF FF 76 F5 F4",
        # the mov is a branch target and too short: (b) displaces the cmp after the int
        "89 D0 E9 FD 0F 00 00 90 90 76 F5 F4",
        "50 E8 00 00 00 00 58 FF 90 F6 FF FF FF 3D 00 F0 FF FF E9 EE EF FF FF",
        Strategy.AFTER,
        id="b-cmp-after",
    ),
    pytest.param(
        "int 0x80; int 0x81; inc eax; jmp 0x8049000",
        "CD 80 CD 81 40 EB F9",
        # (b)'s Code-equality quirk: int 0x81 has the site's Code (int imm8), so its flow
        # (Interrupt) does not stop the forward scan and it is displaced with the inc
        "E9 FF 0F 00 00 EB F9",
        "50 E8 00 00 00 00 58 FF 90 F6 FF FF FF CD 81 40 E9 EC EF FF FF",
        Strategy.AFTER,
        id="b-code-equality-quirk",
    ),
    pytest.param(
        "mov eax, edx; int 0x80; mov ebx, eax; ret; jmp 0x8049000",
        "89 D0 CD 80 89 C3 C3 EB F7",
        # (a) stops at the short branch target, (b) at the ret: (c) takes one each side
        "E9 FF 0F 00 00 90 C3 EB F7",
        "89 D0 50 E8 00 00 00 00 58 FF 90 F4 FF FF FF 89 C3 E9 EC EF FF FF",
        Strategy.BEFORE_AND_AFTER,
        id="c-next",
    ),
    pytest.param(
        "mov eax, edx; int 0x80; ret; jmp 0x8049000",
        "89 D0 CD 80 C3 EB F9",
        "E9 FF 0F 00 00 EB F9",
        # N = ret is copied and there is no jump back
        "89 D0 50 E8 00 00 00 00 58 FF 90 F4 FF FF FF C3",
        Strategy.BEFORE_AND_AFTER,
        id="c-ret",
    ),
    pytest.param(
        "mov eax, edx; int 0x80; jmp 0x8049000",
        "89 D0 CD 80 EB FA",
        "E9 FF 0F 00 00 90",
        # N = the jmp back onto P, copied raw (§4.3): no jump back
        "89 D0 50 E8 00 00 00 00 58 FF 90 F4 FF FF FF EB FA",
        Strategy.BEFORE_AND_AFTER,
        id="c-jmp-self",
    ),
]


@pytest.mark.parametrize(("source", "hexin", "guest", "stub", "strategy"), VECTORS)
@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_vector(source: str, hexin: str, guest: str, stub: str, strategy: Strategy, abi: str):
    code = asm(source)
    assert code == h(hexin), "keystone and the written encoding disagree"
    res = rewrite_elf(tiny_elf32(code), abi=abi)
    assert res.outcome is Outcome.PATCHED
    assert code_at(res.data, CODE, len(code)) == h(guest)
    assert blob_of(res.data) == bytes(4) + h(stub)
    assert [(s.strategy, s.stub_vaddr, s.stub_size) for s in res.sites] == [
        (strategy, SLOT + 4, len(h(stub)))
    ]


def test_reference_hello32_example() -> None:
    """§4.4's two hello-32 sites at their addresses, with the blob at 0x80e7000."""
    first = asm("call dword ptr gs:[0x10]", 0x804914C)
    loop = asm("mov eax, edx; int 0x80; jmp 0x8049e00", 0x8049E00)
    code = first + b"\x90" * (0x8049E00 - 0x8049153) + loop + b"\xc3"
    elf = tiny_elf32(code, code_vaddr=0x804914C, load_end=0x80E6C48)
    res = rewrite_elf(elf)
    out = res.data
    assert code_at(out, 0x804914C, 7) == h("E9 B3 DE 09 00 90 90")  # as in §4.4
    assert code_at(out, 0x8049E00, 7) == h("E9 11 D2 09 00 90 C3")  # as in §4.4
    assert [(s.stub_vaddr, s.stub_size) for s in res.sites] == [(0x80E7004, 18), (0x80E7016, 17)]
    # rel32 back to 0x8049153 from 0x80e7016 = -0x9dec3; slot − pop = -0xa and -0x1e
    assert blob_of(out) == bytes(4) + h(
        "50 E8 00 00 00 00 58 FF 90 F6 FF FF FF E9 3D 21 F6 FF"
        "89 D0 50 E8 00 00 00 00 58 FF 90 E2 FF FF FF EB FA"
    )
    assert trailer32(out) == (b"LITEBOX0", 0x2000, 0x80E7000, 4 + 18 + 17)


def test_20_byte_trailer_and_layout() -> None:
    code = asm("mov eax, 1; int 0x80; ret")
    elf = tiny_elf32(code)
    out = rewrite_elf(elf).data
    magic, offset, vaddr, size = trailer32(out)
    assert (magic, offset, vaddr, size) == (b"LITEBOX0", 0x1000 * ((len(elf) + 0xFFF) // 0x1000),
                                            SLOT, 4 + 23)  # fmt: skip
    assert len(out) == offset + size + 20
    assert out[len(elf) : offset] == bytes(offset - len(elf))  # zero padding
    assert out[offset : offset + 4] == bytes(4)  # the callback slot, filled by the loader
    window = CODE - BASE
    assert out[:window] == elf[:window] and out[window + 7 : len(elf)] == elf[window + 7 :]
    check = check_trailer(out, bits=32)
    assert check.state is TrailerState.VALID and check.trailer is not None
    assert check.trailer.bits == 32


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(h("B8 01 00 00 00 C3"), id="no-pattern"),
        # CD 80 and the gs:[0x10] call bytes inside other instructions: decoded, no site
        pytest.param(h("B8 CD 80 00 00 C3"), id="int80-bytes-in-an-immediate"),
        pytest.param(h("B8 65 FF 15 10 00 00 00 00 C3"), id="call-bytes-across-instructions"),
    ],
)
def test_no_site_gives_the_20_byte_marker(code: bytes) -> None:
    elf = tiny_elf32(code)
    res = rewrite_elf(elf)
    assert res.outcome is Outcome.MARKER
    assert res.data == elf + b"LITEBOX0" + bytes(12)
    assert res.trailer is not None and res.trailer.bits == 32 and res.trailer.size == 0
    again = rewrite_elf(res.data)
    assert again.outcome is Outcome.ALREADY_HOOKED and again.data == res.data


def test_already_hooked_is_left_as_is() -> None:
    out = rewrite_elf(tiny_elf32(asm("mov eax, 1; int 0x80; ret"))).data
    again = rewrite_elf(out)
    assert again.outcome is Outcome.ALREADY_HOOKED
    assert again.data == out


def test_unpatchable_int80_under_each_policy() -> None:
    # The int is a branch target (no (a)), a jmp follows (no (b)), nothing precedes (no (c)).
    code = asm("int 0x80; jmp 0x8049000")
    assert code == h("CD 80 EB FC")
    elf = tiny_elf32(code)
    with pytest.raises(UnpatchableSyscallsError, match="0x8049000") as err:
        rewrite_elf(elf)
    assert err.value.addresses == (CODE,)
    trapped = rewrite_elf(elf, unpatchable="trap")
    assert code_at(trapped.data, CODE, 4) == h("F1 F4 EB FC")
    assert [s.strategy for s in trapped.sites] == [Strategy.TRAPPED]
    assert trapped.unpatchable == (CODE,)
    assert blob_of(trapped.data) == bytes(4)  # the slot only: nothing appended for the site
    kept = rewrite_elf(elf, unpatchable="keep")
    assert code_at(kept.data, CODE, 4) == code
    assert [s.strategy for s in kept.sites] == [Strategy.KEPT]
    assert kept.data.startswith(elf)


def test_trap_fills_a_prefixed_int80_with_nops() -> None:
    code = h("3E CD 80 EB FB")  # ds int 0x80; jmp back onto it
    res = rewrite_elf(tiny_elf32(code), unpatchable="trap")
    assert code_at(res.data, CODE, 5) == h("F1 F4 90 EB FB")


def test_call_gs_at_a_branch_target_is_still_patched() -> None:
    # (a) refuses a site that is a branch target; (b) starts with the site, whose 7 bytes are
    # enough, so the bytes are those of the lone-call vector.
    code = asm("call dword ptr gs:[0x10]; jmp 0x8049000")
    res = rewrite_elf(tiny_elf32(code))
    assert code_at(res.data, CODE, 9) == h("E9 FF 0F 00 00 90 90 EB F7")
    assert blob_of(res.data) == bytes(4) + h(
        "50 E8 00 00 00 00 58 FF 90 F6 FF FF FF E9 F1 EF FF FF"
    )
    assert [s.strategy for s in res.sites] == [Strategy.AFTER]


def test_backward_scan_stops_at_an_earlier_int80() -> None:
    # The first int is no Next instruction, so the second site cannot borrow across it; the
    # Code-equality exemption belongs to the forward scan only.
    code = asm("mov eax, 1; int 0x80; int 0x80; cmp eax, 0xfffff000; ret")
    res = rewrite_elf(tiny_elf32(code))
    assert [(s.strategy, s.window) for s in res.sites] == [
        (Strategy.BEFORE, (CODE, CODE + 7)),
        (Strategy.AFTER, (CODE + 7, CODE + 14)),
    ]


def test_dl_sysinfo_int80_is_skipped_only_through_symtab() -> None:
    code = asm("int 0x80; ret; mov eax, 1; int 0x80; ret")
    skip = (("_dl_sysinfo_int80", CODE, STT_FUNC),)
    res = rewrite_elf(tiny_elf32(code, symbols=skip))
    assert [s.address for s in res.sites] == [CODE + 8]
    assert code_at(res.data, CODE, 3) == h("CD 80 C3")
    # Not a function symbol, or only in .dynsym: the site is rewritten like any other.
    for elf in (
        tiny_elf32(code, symbols=(("_dl_sysinfo_int80", CODE, STT_NOTYPE),)),
        tiny_elf32(code, symbols=skip, symtab_type=SHT_DYNSYM),
    ):
        sites = rewrite_elf(elf, unpatchable="keep").sites
        assert [s.address for s in sites] == [CODE, CODE + 8]


def test_only_the_skipped_site_means_marker() -> None:
    code = asm("int 0x80; ret")
    elf = tiny_elf32(code, symbols=(("_dl_sysinfo_int80", CODE, STT_FUNC),))
    res = rewrite_elf(elf)
    assert res.outcome is Outcome.MARKER and res.data == elf + b"LITEBOX0" + bytes(12)


def test_fork_jump_keeps_endbr32() -> None:
    endbr32 = h("F3 0F 1E FB")
    fork = endbr32 + asm("push ebp; mov ebp, esp; pop ebp; ret", CODE + 4)
    vfork_at = CODE + 0x10
    code = fork + b"\x90" * (0x10 - len(fork)) + asm("mov eax, 190; int 0x80; ret", vfork_at)
    symbols = (("__libc_fork", CODE, STT_FUNC), ("__libc_vfork", vfork_at, STT_FUNC))
    res = rewrite_elf(tiny_elf32(code, symbols=symbols))
    assert res.fork_patch is not None and res.fork_patch.jump_vaddr == CODE + 4
    # jmp from 0x8049004 to 0x8049010: rel32 = 0x10 − 9 = 7
    assert code_at(res.data, CODE, 9) == endbr32 + h("E9 07 00 00 00")
    without = rewrite_elf(tiny_elf32(code, symbols=symbols), fork_patch=False)
    assert without.fork_patch is None and code_at(without.data, CODE, 9) == fork[:9]


def test_trampoline_beyond_4_gib_is_an_error() -> None:
    elf = tiny_elf32(asm("mov eax, 1; int 0x80; ret"), load_end=0xFFFFF001)
    with pytest.raises(RewriteError, match="32-bit"):
        rewrite_elf(elf)


def test_elf32_other_machine_is_still_unchanged() -> None:
    elf = bytearray(tiny_elf32(asm("mov eax, 1; int 0x80; ret")))
    elf[18:20] = struct.pack("<H", 40)  # EM_ARM
    res = rewrite_elf(bytes(elf))
    assert res.outcome is Outcome.UNCHANGED and "ELF32" in res.reason


# Random code biased towards the site encodings, a few jumps and padding.
PIECES = [
    h("CD 80"),
    h("65 FF 15 10 00 00 00"),
    h("89 D0"),
    h("B8 01 00 00 00"),
    h("C3"),
    h("EB FA"),
    h("EB 02"),
    h("90"),
    h("3D 00 F0 FF FF"),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=4)), max_size=24))
def test_random_code_never_breaks_the_invariants(pieces: list[bytes]) -> None:
    code = b"".join(pieces) or b"\x90"
    elf = tiny_elf32(code)
    res = rewrite_elf(elf, unpatchable="keep")
    check = check_trailer(res.data, bits=32)
    assert check.state is TrailerState.VALID
    if res.outcome is Outcome.MARKER:
        assert res.data == elf + b"LITEBOX0" + bytes(12) and res.sites == ()
        return
    assert res.outcome is Outcome.PATCHED and res.trailer is not None
    assert res.trailer.size == 4 + sum(s.stub_size for s in res.sites)
    windows = [s.window for s in res.sites if s.stub_vaddr is not None]
    for s in res.sites:
        if s.stub_vaddr is None:
            # kept in place, unless another site's window (upstream parity) covers it
            if not any(a <= s.address < b for a, b in windows):
                assert code_at(res.data, s.address, 2) == code_at(elf, s.address, 2)
            continue
        start, end = s.window
        assert CODE <= start <= s.address < end <= CODE + len(code)
        assert end - start >= 5
    assert rewrite_elf(res.data).outcome is Outcome.ALREADY_HOOKED
    assert rewrite_elf(elf, unpatchable="keep").data == res.data
