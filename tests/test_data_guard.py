"""Issue 10: a linear-sweep site is patched only with evidence that it is code.

Real objects of this machine (libc, ld.so, libcrypto's P-256 table), synthetic objects built
here with gcc (a table in .text, a jump-table function, code reached only through a function
pointer in .data, a stripped object without .eh_frame), and the three crafted inputs on which
the rewriter used to write bytes that are not code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iced_x86 import Code, Decoder
from keystone import KS_ARCH_X86, KS_MODE_32, Ks

from rewriter import Outcome, RewriteError, Strategy, rewrite_elf
from rewriter.codemap import _BRANCH, _sweep_kinds, judge
from rewriter.elf import ElfFile
from rewriter.sweep import CHUNK
from tests.elfbuild import CODE_OFFSET, CODE_VADDR, code_of, tiny_elf
from tests.independent_elf import read_elf
from tests.test_i386_vectors import CODE as CODE32
from tests.test_i386_vectors import tiny_elf32

LIB = Path("/usr/lib/x86_64-linux-gnu")
LIB32_LIBC = Path("/usr/lib32/libc.so.6")
LIBCRYPTO = LIB / "libcrypto.so.3"
CRYPTO_TABLE_SITE = 0x1AEE2B  # file offset of the 0F 05 inside OpenSSL's P-256 table


def sites_outside_map(data: bytes) -> dict[int, str]:
    """How each site that no FDE or function symbol covers was shown to be code."""
    plain = rewrite_elf(data, unpatchable="keep", data_guard=False)
    elf = ElfFile(data)
    texts = elf.text_sections
    where = [
        (next(s for s in texts if s.addr <= x.address < s.addr + s.size), x.address)
        for x in plain.sites
    ]
    return judge(elf, data, texts, where).reached


# --- real objects ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "sites"), [("libc.so.6", 526), ("ld-linux-x86-64.so.2", 46)])
@pytest.mark.parametrize("abi", ["redzone", "resume"])
def test_no_real_site_is_lost(name: str, sites: int, abi: str) -> None:
    data = (LIB / name).read_bytes()
    guarded = rewrite_elf(data, abi=abi)
    assert guarded.patched_sites == sites and guarded.data_in_code == ()
    assert guarded.code_map == "eh_frame+symbols"
    # Nothing is data-in-code here, so the output is the unguarded one, byte for byte.
    assert guarded.data == rewrite_elf(data, abi=abi, data_guard=False).data


def test_libc_clone3_child_path_is_code_by_fall_through() -> None:
    """glibc's clone3 ends its FDE just before the syscall (the child must not unwind past
    it): no FDE or symbol covers the site, but the covered code before it falls into it."""
    reached = sites_outside_map((LIB / "libc.so.6").read_bytes())
    assert len(reached) == 1
    ((addr, how),) = reached.items()
    assert how.startswith("reached by fall-through from code at ")
    insn = next(iter(Decoder(64, (LIB / "libc.so.6").read_bytes()[addr : addr + 2], ip=addr)))
    assert insn.code == Code.SYSCALL


def test_libcrypto_p256_table_is_data_in_code() -> None:
    data = LIBCRYPTO.read_bytes()
    assert data[CRYPTO_TABLE_SITE : CRYPTO_TABLE_SITE + 2] == b"\x0f\x05"
    res = rewrite_elf(data)
    site = read_elf(data).vaddr_of(CRYPTO_TABLE_SITE)
    assert [d.address for d in res.data_in_code] == [site]
    assert "outside every FDE and function symbol" in res.data_in_code[0].why
    # Its only candidate was data: the header-only marker, so LiteBox's load-time patcher
    # leaves the file alone, and the bytes are the input's.
    assert res.outcome is Outcome.MARKER and res.data[: len(data)] == data
    assert "1 data-in-code site(s) left as they are" in res.summary()
    doc = res.to_json()
    assert doc["data_in_code"] == [{"address": site, "why": res.data_in_code[0].why}]
    # --no-data-guard patches it, as upstream does; the two outputs differ only at that site's
    # window and in the trampoline the unguarded one appends.
    plain = rewrite_elf(data, abi="resume", data_guard=False, fork_patch=False)
    assert plain.outcome is Outcome.PATCHED and [s.address for s in plain.sites] == [site]
    (s,) = plain.sites
    lo, hi = (read_elf(data).offset_of(a) for a in s.window)
    assert plain.data[:lo] == data[:lo] and plain.data[hi : len(data)] == data[hi:]
    assert plain.data[lo:hi] != data[lo:hi]


# --- synthetic objects, built with gcc -----------------------------------------------------------

MAIN_CALLS = """
    .text
    .globl main
    .type main, @function
main:
    .cfi_startproc
    {body}
    xor %eax, %eax
    ret
    .cfi_endproc
    .size main, .-main
"""

TABLE = (
    MAIN_CALLS.format(body="lea table(%rip), %rax\n    movzbl 1(%rax), %eax")
    + """
    .p2align 4
table:                      # data in .text: no FDE, no symbol type or size, never executed
    .byte 0x90, 0x0f, 0x05, 0x90, 0x11, 0x22, 0x33, 0x44
"""
)

HIDDEN = """
    .p2align 4
hidden:                     # code with no FDE and no function symbol
    mov $39, %eax           # getpid
    syscall
    ret
"""

POINTER = (
    MAIN_CALLS.format(body="sub $8, %rsp\n    call *fnptr(%rip)\n    add $8, %rsp")
    + HIDDEN
    + """
    .data
    .p2align 3
fnptr:
    .quad hidden            # a relocation (R_X86_64_RELATIVE in a PIE) points at the code
"""
)

JUMP_TABLE = r"""
long pick(long n) {
    switch (n) {
    case 0: return 11;
    case 1: return 27;
    case 2: { long r; __asm__ volatile("syscall" : "=a"(r) : "a"(39L) : "rcx", "r11"); return r; }
    case 3: return 5;
    case 4: return 8;
    case 5: return 99;
    default: return -1;
    }
}
int main(int argc, char **argv) { (void)argv; return pick(argc + 1) > 0 ? 0 : 1; }
"""


def gcc(tmp_path: Path, source: str, suffix: str, *flags: str) -> bytes:
    src = tmp_path / f"prog{suffix}"
    src.write_text(source)
    out = tmp_path / "prog"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src), *flags], check=True, timeout=60)
    return out.read_bytes()


def site_addresses(data: bytes) -> list[int]:
    return [s.address for s in rewrite_elf(data, data_guard=False).sites]


def test_syscall_pair_in_a_table_in_text_is_data_in_code(tmp_path: Path) -> None:
    data = gcc(tmp_path, TABLE, ".S")
    (site,) = site_addresses(data)
    res = rewrite_elf(data)
    assert [d.address for d in res.data_in_code] == [site]
    assert res.outcome is Outcome.MARKER and res.data[: len(data)] == data
    # The table's address is taken (lea), but the code dereferences it: data, not code.
    assert "an address taken" in res.data_in_code[0].why


def test_syscall_reached_only_through_a_jump_table_is_patched(tmp_path: Path) -> None:
    data = gcc(tmp_path, JUMP_TABLE, ".c", "-fno-inline")
    elf = ElfFile(data)
    assert any(s.name == ".rodata" for s in elf.sections)
    sites = site_addresses(data)
    res = rewrite_elf(data)
    assert res.data_in_code == () and sorted(s.address for s in res.sites) == sorted(sites)
    assert len(sites) == 1 and res.patched_sites == 1


def test_syscall_reached_only_through_a_function_pointer_in_data_is_patched(
    tmp_path: Path,
) -> None:
    data = gcc(tmp_path, POINTER, ".S", "-pie")
    (site,) = site_addresses(data)
    res = rewrite_elf(data)
    assert res.data_in_code == () and res.patched_sites == 1
    how = sites_outside_map(data)[site]
    assert how.startswith("reached from the code entry ")
    # The control: the same code with nothing pointing at it is data-in-code.
    unreferenced = gcc(tmp_path, MAIN_CALLS.format(body="nop") + HIDDEN, ".S", "-pie")
    res = rewrite_elf(unreferenced)
    assert len(res.data_in_code) == 1 and res.patched_sites == 0


STRIPPED = """
    .globl _start
_start:
    mov $60, %eax
    xor %edi, %edi
    syscall
"""


def test_stripped_object_without_eh_frame_is_patched_everywhere(tmp_path: Path) -> None:
    data = gcc(tmp_path, STRIPPED, ".S", "-nostdlib", "-static", "-s", "-Wl,--build-id=none")
    elf = ElfFile(data)
    assert not any(s.name in (".eh_frame", ".symtab") for s in elf.sections)
    res = rewrite_elf(data)
    assert res.patched_sites == 1 and res.data_in_code == ()
    assert res.code_map == "none" and "no code map: every site patched" in res.summary()
    assert res.to_json()["code_map_notes"] == ["no code map: every site patched"]


# --- crafted inputs: bytes that are not code ---------------------------------------------------


def test_trapped_prefixed_syscall_is_nop_filled() -> None:
    """66 0F 05 with no room for a jump: F1 F4 and a NOP, never a stray 05 that would change
    how the next instruction decodes."""
    res = rewrite_elf(tiny_elf(bytes.fromhex("660f05")), unpatchable="trap")
    assert [s.strategy for s in res.sites] == [Strategy.TRAPPED]
    assert code_of(res.data, 3) == bytes.fromhex("f1f490")


def test_immediate_straddling_a_chunk_end_is_not_patched() -> None:
    """A mov whose immediate holds 0F 05 right at the 8 MiB chunk end: only upstream's byte
    parity mode (--abi resume --no-data-guard) reads it as a syscall."""
    filler = bytes.fromhex("66662e0f1f840000000000")  # 11-byte NOP
    code = bytearray(filler * ((CHUNK - 4) // len(filler)))
    code += b"\x90" * (CHUNK - 4 - len(code))
    code += bytes.fromhex("48b8" + "3412" + "0f05" + "78563412") + b"\xc3"
    elf = tiny_elf(bytes(code))
    assert elf[CODE_OFFSET + CHUNK : CODE_OFFSET + CHUNK + 2] == b"\x0f\x05"
    for abi, guard in (("redzone", True), ("redzone", False), ("resume", True)):
        res = rewrite_elf(elf, abi=abi, data_guard=guard, unpatchable="keep")
        assert res.outcome is Outcome.MARKER and res.sites == (), (abi, guard)
    parity = rewrite_elf(elf, abi="resume", data_guard=False, unpatchable="keep")
    assert [s.address for s in parity.sites] == [CODE_VADDR + CHUNK]


def test_i386_overlapping_windows_are_refused() -> None:
    """int 0x80; mov; int 0x80: the second site's backward window would start inside the first
    site's forward window. The second takes its forward strategy instead."""
    ks = Ks(KS_ARCH_X86, KS_MODE_32)
    code = bytes(ks.asm("int 0x80; mov ebx, 1; int 0x80; mov ecx, 2; ret", CODE32)[0])
    res = rewrite_elf(tiny_elf32(code), unpatchable="keep")
    windows = sorted(s.window for s in res.sites)
    assert len(windows) == 2 and windows[0][1] <= windows[1][0]
    assert [s.strategy for s in res.sites] == [Strategy.AFTER, Strategy.AFTER]
    assert res.warnings == ()


def test_rewrite_command_reports_data_in_code(tmp_path: Path) -> None:
    from tests.test_cli_rewrite import cli

    out = tmp_path / "libcrypto.hooked"
    res = cli("rewrite", LIBCRYPTO, "-o", out)
    assert res.returncode == 0, res.stderr
    assert "1 data-in-code site(s) left as they are" in res.stdout
    assert out.read_bytes()[: LIBCRYPTO.stat().st_size] == LIBCRYPTO.read_bytes()
    doc = json.loads(cli("rewrite", LIBCRYPTO, "-o", out, "--json").stdout)
    site = read_elf(LIBCRYPTO.read_bytes()).vaddr_of(CRYPTO_TABLE_SITE)
    assert [d["address"] for d in doc["data_in_code"]] == [site]
    assert doc["outcome"] == "checked-nothing-to-patch" and doc["code_map"] == "eh_frame+symbols"
    res = cli("rewrite", LIBCRYPTO, "-o", out, "--no-data-guard", "--json")
    doc = json.loads(res.stdout)
    assert doc["outcome"] == "patched" and doc["data_in_code"] == []
    assert doc["code_map"] == "off" and doc["sites_patched"] == 1


def _section(data: bytes, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in ElfFile(data).sections if s.name == name)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from([".eh_frame", ".eh_frame_hdr", ".dynsym", ".rela.dyn", ".dynamic"]),
    at=st.integers(0, 1 << 16),
    junk=st.binary(min_size=1, max_size=24),
)
def test_corrupt_evidence_never_crashes_the_guard(name: str, at: int, junk: bytes) -> None:
    """Bad tables are no evidence (or a one-line RewriteError), never a traceback."""
    data = bytearray(LIBC_BYTES)
    sec = _section(LIBC_BYTES, name)
    off = sec.offset + at % sec.size
    data[off : off + len(junk)] = junk
    try:
        res = rewrite_elf(bytes(data), unpatchable="keep")
    except RewriteError as e:
        assert "\n" not in str(e)
        return
    assert res.outcome in (Outcome.PATCHED, Outcome.MARKER)


LIBC_BYTES = (LIB / "libc.so.6").read_bytes()


@pytest.mark.parametrize(
    ("path", "bits"), [(LIB / "libc.so.6", 64), (LIB / "libcrypto.so.3", 64), (LIB32_LIBC, 32)]
)
def test_second_sweep_reads_branch_targets_of_every_branch_code(path: Path, bits: int) -> None:
    """The second sweep reads ``near_branch_target`` only of the codes its table names: every
    instruction of real code that has a target must have one of them."""
    if not path.exists():
        pytest.skip(f"needs {path}")
    kinds = _sweep_kinds()
    data = path.read_bytes()
    missed = set()
    for sec in ElfFile(data).text_sections:
        for insn in Decoder(bits, data[sec.offset : sec.offset + sec.size], ip=sec.addr):
            if insn.near_branch_target and kinds.get(insn.code) != _BRANCH:
                missed.add(insn.code)
    assert not missed
