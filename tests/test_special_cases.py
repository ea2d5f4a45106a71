"""Special cases of reference §7-8: the program-header fix-up and the fork→vfork refusals."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from rewriter import ElfFile, Outcome, RewriteError, rewrite_elf
from rewriter.elf import PT_LOAD, PT_PHDR
from tests.elfbuild import BASE, CODE_VADDR, tiny_elf

CODE = bytes.fromhex("90 90 90 0f 05 c3")  # nop; nop; nop; syscall; ret


def with_unaligned_phdrs(code: bytes, phoff: int) -> bytes:
    """tiny_elf with its program headers (PT_PHDR + PT_LOAD) moved to an unaligned offset."""
    data = bytearray(tiny_elf(code))
    load = data[64 : 64 + 56]
    data[64 : 64 + 56] = bytes(56)
    phdr = struct.pack("<IIQQQQQQ", PT_PHDR, 4, phoff, BASE + phoff, BASE + phoff, 112, 112, 8)
    data[phoff : phoff + 112] = phdr + load
    struct.pack_into("<Q", data, 32, phoff)  # e_phoff
    struct.pack_into("<HH", data, 54, 56, 2)  # e_phentsize, e_phnum
    return bytes(data)


def test_unaligned_program_headers_move_to_the_next_8_byte_boundary() -> None:
    data = with_unaligned_phdrs(CODE, 0x101)
    res = rewrite_elf(data)
    assert res.outcome is Outcome.PATCHED
    out = ElfFile(res.data)
    assert out.phoff == 0x108
    phdr = next(s for s in out.segments if s.type == PT_PHDR)
    assert (phdr.offset, phdr.vaddr, phdr.paddr) == (0x108, BASE + 0x108, BASE + 0x108)
    assert any(s.type == PT_LOAD for s in out.segments)
    assert res.data[0x101:0x108] == bytes(7)  # the vacated bytes are zero


def test_unaligned_program_headers_are_left_alone_for_the_marker() -> None:
    data = with_unaligned_phdrs(bytes.fromhex("90 c3"), 0x101)
    res = rewrite_elf(data)
    assert res.outcome is Outcome.MARKER and res.data[: len(data)] == data


def test_no_fix_up_when_the_bytes_after_the_table_are_not_zero() -> None:
    data = bytearray(with_unaligned_phdrs(CODE, 0x101))
    data[0x101 + 112] = 0xAA
    res = rewrite_elf(bytes(data))
    assert ElfFile(res.data).phoff == 0x101


FORK_LIB = """
    .text
    .globl __libc_fork, __vfork
    .type __libc_fork, @function
    .type __vfork, @function
__vfork:
    mov $58, %eax
    syscall
    ret
__libc_fork:
    mov $57, %eax
    syscall
    ret
"""


def build_lib(tmp_path: Path, source: str) -> bytes:
    src = tmp_path / "fork.S"
    src.write_text(source)
    out = tmp_path / "libfork.so"
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", out, src], check=True)
    return out.read_bytes()


def test_fork_jump_overlapping_a_patched_window_is_refused(tmp_path: Path) -> None:
    # __libc_fork's own syscall window starts at its entry: the jump would overwrite it.
    data = build_lib(tmp_path, FORK_LIB)
    with pytest.raises(RewriteError, match=r"fork→vfork jump .* overlaps the patched window"):
        rewrite_elf(data)
    res = rewrite_elf(data, fork_patch=False)
    assert res.outcome is Outcome.PATCHED and res.fork_patch is None


def test_fork_jump_that_would_leave_its_section_is_refused(tmp_path: Path) -> None:
    source = FORK_LIB.replace(
        "__libc_fork:\n    mov $57, %eax\n    syscall\n    ret", "__libc_fork:\n    ret"
    )
    data = build_lib(tmp_path, source)
    elf = ElfFile(data)
    text = next(s for s in elf.text_sections if s.name == ".text")
    fork = next(
        s.value for t in elf.sections if t.type in (2, 11) for s in elf.symbols(t, ["__libc_fork"])
    )
    if fork + 5 <= text.addr + text.size:
        pytest.skip("the linker placed code after __libc_fork")
    with pytest.raises(RewriteError, match="would leave section"):
        rewrite_elf(data)


def test_tiny_elf_code_address() -> None:
    assert ElfFile(tiny_elf(CODE)).entry == CODE_VADDR
