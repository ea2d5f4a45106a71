"""The windowed sweep must equal one plain linear sweep: continuous, or with upstream's 8 MiB
chunk rule where byte parity asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from iced_x86 import Code, Decoder

from rewriter import ElfFile
from rewriter.sweep import CHUNK, CHUNK_LOOKAHEAD, sweep_section

REAL = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/bin/python3.11",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
]


def plain_sweep(code: bytes, base: int, chunked: bool) -> tuple[set[int], list[int]]:
    """Every instruction decoded: in one go, or chunk by chunk the way the reference describes
    upstream's decoding."""
    targets: set[int] = set()
    syscalls: list[int] = []
    step = CHUNK if chunked else max(len(code), 1)
    for start in range(0, max(len(code), 1), step):
        end = min(start + step, len(code))
        limit = min(len(code), end + CHUNK_LOOKAHEAD) if end < len(code) else len(code)
        for insn in Decoder(64, code[start:limit], ip=base + start):
            if insn.ip >= base + end:
                break
            if insn.near_branch_target:
                targets.add(insn.near_branch_target)
            if insn.code == Code.SYSCALL:
                syscalls.append(insn.ip)
    return targets, syscalls


def windowed(code: bytes, base: int, chunked: bool) -> tuple[set[int], list[int]]:
    targets: set[int] = set()
    sw = sweep_section(code, base, targets, chunked=chunked)
    targets.discard(0)
    syscalls = [i.ip for run in sw.runs for i in run if i.code == Code.SYSCALL]
    assert syscalls == [run[i].ip for run, i in sw.sites]
    assert sweep_section(code, base, None, chunked=chunked).sites.__len__() == len(syscalls)
    return targets, syscalls


@pytest.mark.parametrize("path", REAL)
def test_windowed_sweep_equals_plain_sweep_on_real_code(path: str) -> None:
    data = Path(path).read_bytes()
    elf = ElfFile(data)
    for sec in elf.text_sections:
        code = data[sec.offset : sec.offset + sec.size]
        assert windowed(code, sec.addr, False) == plain_sweep(code, sec.addr, False), sec.name


@pytest.mark.parametrize("chunked", [True, False])
def test_chunk_rule_on_a_section_larger_than_8_mib(chunked: bool) -> None:
    libc = Path(REAL[0]).read_bytes()
    text = next(s for s in ElfFile(libc).text_sections if s.name == ".text")
    body = libc[text.offset : text.offset + text.size]
    code = bytearray(body * (CHUNK // len(body) + 2))
    # Put syscall pairs right at, just before and just after the chunk end, and one long
    # instruction straddling the second boundary, so the restart rule matters.
    code[CHUNK - 1 : CHUNK + 1] = b"\x0f\x05"
    code[CHUNK + 7 : CHUNK + 9] = b"\x0f\x05"
    code[2 * CHUNK - 3 : 2 * CHUNK + 7] = bytes.fromhex("48b8" + "0f05" * 4)  # movabs spanning
    code = bytes(code[: 2 * CHUNK + 0x1000])
    base = 0x10000
    got = windowed(code, base, chunked)
    want = plain_sweep(code, base, chunked)
    assert got[1] == want[1]
    assert got[0] == want[0]


def test_an_immediate_straddling_a_chunk_end_is_no_syscall() -> None:
    """Issue 10: a mov whose immediate holds 0F 05 right at the 8 MiB boundary. Upstream's
    restart there reads the pair as a syscall; one continuous decode does not."""
    filler = bytes.fromhex("66662e0f1f840000000000")  # 11-byte NOP
    code = bytearray(filler * ((CHUNK - 4) // len(filler)))
    code += b"\x90" * (CHUNK - 4 - len(code))
    code += bytes.fromhex("48b8" + "3412" + "0f05" + "78563412") + b"\xc3" * 0x100
    base = 0x400000
    assert code[CHUNK : CHUNK + 2] == b"\x0f\x05"
    assert windowed(bytes(code), base, True)[1] == [base + CHUNK]
    assert windowed(bytes(code), base, False)[1] == []
