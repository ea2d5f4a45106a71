"""The rewriter on real binaries: this machine's libc.so.6 and ld.so, and the samples.

Every expectation comes from somewhere other than the rewriter: syscall sites from a capstone
linear sweep, symbol addresses from ``readelf -Ws``, the trailer and layout from the reference
(§1-2) read with our own struct code, the lone sample's address from its symbol table.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from rewriter import (
    Abi,
    Outcome,
    Strategy,
    UnpatchableSyscallsError,
    rewrite_elf,
)
from tests.conftest import BuildSample
from tests.independent_elf import PAGE, Elf, align, read_elf
from tests.test_rewriter_capstone import ABIS, CS, LDSO, LIBC, SLOT_SIZE, rewritten, sweep

TRAILER = struct.Struct("<8sQQQ")
ENDBR64 = b"\xf3\x0f\x1e\xfa"


def symbols(path: Path | str) -> dict[str, int]:
    """Function and other defined symbols by name (version suffix stripped), via readelf."""
    out = subprocess.run(
        ["readelf", "-Ws", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        f = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(f) >= 8 and f[0][:-1].isdigit() and f[6] != "UND":
            found.setdefault(re.sub(r"@.*", "", f[7]), int(f[1], 16))
    return found


def diff_offsets(before: bytes, after: bytes) -> list[int]:
    """File offsets where two equal-length byte strings differ."""
    assert len(before) == len(after)
    out = []
    step = 4096  # compare whole pages first: almost all of them are equal
    for base in range(0, len(before), step):
        a, b = before[base : base + step], after[base : base + step]
        if a != b:
            out += [base + k for k, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return out


def check_layout(
    data: bytes, res_data: bytes, elf: Elf, allowed: list[tuple[int, int]]
) -> tuple[int, int, int]:
    """Reference §1.1: original prefix (changed only in ``allowed`` vaddr ranges), zero padding,
    page-aligned blob, 32-byte trailer consistent with the file and the PT_LOADs.
    Returns the trailer's (file_offset, vaddr, size)."""
    magic, file_offset, vaddr, size = TRAILER.unpack_from(res_data, len(res_data) - 32)
    assert magic == b"LITEBOX0"
    assert file_offset == align(len(data), PAGE), "blob starts at the first page after the input"
    assert file_offset + size == len(res_data) - 32, "the file ends with blob + trailer"
    assert vaddr == elf.blob_vaddr, "vaddr = page-aligned end of the highest PT_LOAD"
    assert size >= SLOT_SIZE
    assert res_data[len(data) : file_offset] == bytes(file_offset - len(data)), "zero padding"
    allowed_offsets: set[int] = set()
    for lo, hi in allowed:
        start = elf.offset_of(lo, hi - lo)
        allowed_offsets.update(range(start, start + hi - lo))
    stray = [off for off in diff_offsets(data, res_data[: len(data)]) if off not in allowed_offsets]
    assert not stray, f"bytes changed outside windows/fork patch at offsets {stray[:8]}"
    return file_offset, vaddr, size


# --- every syscall of libc and ld.so, both ABIs -----------------------------------------------


def check_all_sites_patched(path: str, abi: Abi) -> None:
    data, res = rewritten(path, abi)
    expected = sweep(data).syscalls
    assert expected, "the capstone sweep must find syscalls here"
    assert res.outcome is Outcome.PATCHED
    assert res.unpatchable == ()
    assert sorted(s.address for s in res.sites) == sorted(expected)
    assert res.patched_sites == len(expected) == len(res.sites)
    counts = res.strategy_counts
    assert set(counts) <= {Strategy.BEFORE.value, Strategy.AFTER.value}
    assert sum(counts.values()) == len(expected)
    for s in res.sites:
        lo, hi = s.window
        assert lo <= s.address and s.address + 2 <= hi and hi - lo >= 5, hex(s.address)
        assert (lo == s.address) == (s.strategy is Strategy.AFTER), hex(s.address)
        assert (hi == s.address + 2) == (s.strategy is Strategy.BEFORE), hex(s.address)
    windows = [s.window for s in res.sites]
    if res.fork_patch is not None:
        windows.append((res.fork_patch.jump_vaddr, res.fork_patch.jump_vaddr + 5))
    trailer = check_layout(data, res.data, read_elf(data), windows)
    assert res.trailer is not None
    assert trailer == (res.trailer.file_offset, res.trailer.vaddr, res.trailer.size)
    assert trailer[2] == SLOT_SIZE + sum(s.stub_size for s in res.sites)


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
@pytest.mark.parametrize("path", [LIBC, LDSO], ids=["libc.so.6", "ld.so"])
def test_system_libraries_fully_patched(path: str, abi: Abi) -> None:
    check_all_sites_patched(path, abi)


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("hello.c", "static"),
        ("hello.c", "static-pie"),
        ("hello.c", "dynamic"),
        ("sites.S", "nostdlib"),
    ],
)
def test_samples_fully_patched(source: str, kind: str, abi: Abi, build_sample: BuildSample) -> None:
    check_all_sites_patched(str(build_sample(source, kind)), abi)


def test_samples_run_natively(build_sample: BuildSample) -> None:
    hello = subprocess.run([build_sample("hello.c", "static"), "x"], capture_output=True)
    assert (hello.returncode, hello.stdout) == (1, b"hello from litebox-pack (argc=2)\n")
    sites = subprocess.run([build_sample("sites.S", "nostdlib")], capture_output=True)
    assert (sites.returncode, sites.stdout) == (0, b"LITEBOX-PACK: RIP-RELATIVE SITES OK\n")
    lone = subprocess.run([build_sample("lone.S", "nostdlib")], capture_output=True)
    assert lone.returncode == 0


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_sites_sample_strategies(abi: Abi, build_sample: BuildSample) -> None:
    """Each labelled site of sites.S gets the strategy its surroundings force (see the file)."""
    path = build_sample("sites.S", "nostdlib")
    data, res = rewritten(str(path), abi)
    sym = symbols(path)
    by_addr = {s.address: s for s in res.sites}
    elf = read_elf(data)

    text = next(t for t in elf.texts if t.name == ".text")
    starts = [i.address for i in CS.disasm(elf.bytes_at(data, text.addr, text.size), text.addr)]

    def insn_before(addr: int, back: int) -> int:
        return starts[starts.index(addr) - back]

    before = by_addr[sym["site_before_riprel"]]
    # lea rsi,[rip+outbuf] (7 bytes) + mov eax,edi (2): both move, the lea with its target.
    assert before.strategy is Strategy.BEFORE
    assert before.window == (insn_before(before.address, 2), before.address + 2)
    target = by_addr[sym["site_branch_target"]]
    assert target.strategy is Strategy.AFTER
    assert target.window == (target.address, target.address + 2 + 7)  # mov [rip+ppid], rax
    jmp = by_addr[sym["site_jmp_after"]]
    assert jmp.strategy is Strategy.AFTER
    assert jmp.window == (jmp.address, jmp.address + 2 + 5)  # jmp rel32
    exit_site = by_addr[sym["site_exit"]]
    assert exit_site.strategy is Strategy.BEFORE
    assert exit_site.window == (sym["exit_with_edi"], exit_site.address + 2)


# --- marker, already hooked, determinism ------------------------------------------------------


def test_syscall_free_library_gets_the_marker(build_sample: BuildSample) -> None:
    data = build_sample("nosys.c", "shared").read_bytes()
    elf = read_elf(data)
    assert sum(s.size for s in elf.texts) > 64, "the library has real code"
    assert sweep(data).syscalls == ()
    for abi in ABIS:
        res = rewrite_elf(data, abi=abi)
        assert res.outcome is Outcome.MARKER
        assert res.data == data + b"LITEBOX0" + bytes(24)


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_already_hooked_is_returned_unchanged(abi: Abi, build_sample: BuildSample) -> None:
    inputs = [rewritten(LIBC, abi)[1].data, rewritten(LDSO, abi)[1].data]
    inputs.append(rewrite_elf(build_sample("nosys.c", "shared").read_bytes(), abi=abi).data)
    for hooked in inputs:
        for again_abi in ABIS:  # whatever ABI is asked for, a hooked file stays as it is
            res = rewrite_elf(hooked, abi=again_abi)
            assert res.outcome is Outcome.ALREADY_HOOKED
            assert res.data == hooked


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_deterministic(abi: Abi, build_sample: BuildSample) -> None:
    for path in (LIBC, build_sample("sites.S", "nostdlib")):
        data = Path(path).read_bytes()
        assert rewrite_elf(data, abi=abi).data == rewrite_elf(bytes(data), abi=abi).data


def test_abis_differ_only_in_stubs() -> None:
    # Same sites, same windows; the stubs (and so the jump displacements) differ.
    a, b = rewritten(LIBC, Abi.REDZONE)[1], rewritten(LIBC, Abi.RESUME)[1]
    assert [(s.address, s.strategy, s.window) for s in a.sites] == [
        (s.address, s.strategy, s.window) for s in b.sites
    ]
    assert a.data != b.data


# --- unpatchable sites ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lone(build_sample: BuildSample) -> tuple[bytes, int, int]:
    """The lone sample's bytes, the address of its one syscall, and that syscall's file offset."""
    path = build_sample("lone.S", "nostdlib")
    data = path.read_bytes()
    addr = symbols(path)["lone_syscall"]
    assert sweep(data).syscalls == (addr,)
    return data, addr, read_elf(data).offset_of(addr, 2)


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_unpatchable_fail(abi: Abi, lone: tuple[bytes, int, int]) -> None:
    data, addr, _ = lone
    with pytest.raises(UnpatchableSyscallsError) as err:
        rewrite_elf(data, abi=abi)  # "fail" is the default
    assert err.value.addresses == (addr,)
    assert f"{addr:#x}" in str(err.value)
    with pytest.raises(UnpatchableSyscallsError):
        rewrite_elf(data, abi=abi, unpatchable="fail")


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_unpatchable_trap(abi: Abi, lone: tuple[bytes, int, int]) -> None:
    data, addr, off = lone
    res = rewrite_elf(data, abi=abi, unpatchable="trap")
    assert res.unpatchable == (addr,)
    assert [(s.address, s.strategy) for s in res.sites] == [(addr, Strategy.TRAPPED)]
    assert res.data[off : off + 2] == b"\xf1\xf4"  # ICEBP; HLT
    check_layout(data, res.data, read_elf(data), [(addr, addr + 2)])


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_unpatchable_keep(abi: Abi, lone: tuple[bytes, int, int], tmp_path: Path) -> None:
    data, addr, _ = lone
    res = rewrite_elf(data, abi=abi, unpatchable="keep")
    assert res.unpatchable == (addr,)
    assert [(s.address, s.strategy) for s in res.sites] == [(addr, Strategy.KEPT)]
    check_layout(data, res.data, read_elf(data), [])  # not one byte of the input changed
    # The kept syscall still works: the output runs natively (the blob is not mapped).
    out = tmp_path / "lone-kept"
    out.write_bytes(res.data)
    out.chmod(0o755)
    assert subprocess.run([out]).returncode == 0


# --- fork → vfork -----------------------------------------------------------------------------


def check_fork_jump(path: Path | str, original: bytes, out: bytes, fork: int, vfork: int) -> None:
    """The 5 bytes after fork's entry (and after an ENDBR64 there) are ``jmp vfork``."""
    elf = read_elf(original)
    off = elf.offset_of(fork, 9)
    at = fork + 4 if original[off : off + 4] == ENDBR64 else fork
    if at != fork:
        assert out[off : off + 4] == ENDBR64, "a leading ENDBR64 stays in place"
    jmp = next(CS.disasm(elf.bytes_at(out, at, 5), at))
    assert (jmp.mnemonic, jmp.size, int(jmp.op_str, 16)) == ("jmp", 5, vfork), path


@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.value)
def test_libc_fork_jumps_to_vfork(abi: Abi) -> None:
    data, res = rewritten(LIBC, abi)
    sym = symbols(LIBC)
    fork, vfork = sym["__libc_fork"], sym["__vfork"]
    fp = res.fork_patch
    assert fp is not None
    assert (fp.fork_symbol, fp.fork_vaddr, fp.vfork_symbol, fp.vfork_vaddr) == (
        "__libc_fork",
        fork,
        "__vfork",
        vfork,
    )
    check_fork_jump(LIBC, data, res.data, fork, vfork)
    off = read_elf(data).offset_of(fp.jump_vaddr, 5)
    assert fp.file_offset == off
    # Turned off, fork's bytes are the original ones.
    plain = rewrite_elf(data, abi=abi, fork_patch=False)
    assert plain.fork_patch is None
    assert plain.data[off : off + 5] == data[off : off + 5]


FORK_PAIR_C = r"""
/* Defines the two names the fork patch looks for, with CET entry stubs (ENDBR64). */
int fork_calls;
__attribute__((noinline)) long raw_syscall(long nr) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr) : "rcx", "r11", "memory");
    return r;
}
long __libc_fork(void) { fork_calls += 3; return raw_syscall(57); }
long __vfork(void) { fork_calls += 5; return raw_syscall(58); }
"""


def test_fork_patch_keeps_endbr64(tmp_path: Path) -> None:
    src = tmp_path / "forkpair.c"
    src.write_text(FORK_PAIR_C)
    lib = tmp_path / "forkpair.so"
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-fcf-protection=full", "-o", str(lib), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    data = lib.read_bytes()
    sym = symbols(lib)
    fork, vfork = sym["__libc_fork"], sym["__vfork"]
    assert read_elf(data).bytes_at(data, fork, 4) == ENDBR64, "gcc must emit ENDBR64 here"
    res = rewrite_elf(data)
    assert res.fork_patch is not None and res.fork_patch.jump_vaddr == fork + 4
    check_fork_jump(lib, data, res.data, fork, vfork)


def test_layout_check_sees_a_stray_byte(build_sample: BuildSample) -> None:
    """check_layout must fail when a byte outside every window changes (no vacuous pass)."""
    path = build_sample("sites.S", "nostdlib")
    data, res = rewritten(str(path), Abi.REDZONE)
    windows = [s.window for s in res.sites]
    check_layout(data, res.data, read_elf(data), windows)
    broken = bytearray(res.data)
    broken[0x40] ^= 0xFF  # inside the program headers
    with pytest.raises(AssertionError, match="outside windows"):
        check_layout(data, bytes(broken), read_elf(data), windows)
