"""The i386 rewriter on real binaries: this machine's i386 libc.so.6 and ld-linux.so.2, and the
samples built with ``gcc -m32``.

Everything the rewriter is compared with comes from elsewhere: sites and branch targets from a
capstone (32-bit) linear sweep, symbols from ``readelf -Ws``, program headers and sections from
this file's own struct code, the layout and the 20-byte trailer from reference §1-2, and which
window each site should get from §4.3 applied to capstone's decode.
"""

from __future__ import annotations

import functools
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, Cs, CsInsn
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_REG_EAX

from rewriter import Abi, Outcome, RewriteResult, Site, Strategy, rewrite_elf
from tests.conftest import BuildSample
from tests.independent_elf import PAGE, Elf, align, read_elf
from tests.test_rewriter_capstone import branch_target

LIBC32 = "/lib32/libc.so.6"
LDSO32 = "/lib32/ld-linux.so.2"
SLOT_SIZE = 4
U32 = 1 << 32
# Mnemonics after which a linear flow does not simply continue (iced: any flow but Next).
CONTROL = re.compile(r"^(j|call$|ret|iret|int|into$|loop|ud[012]$|sys|xbegin$|xabort$|xend$)")


def read_elf32(data: bytes) -> Elf:
    elf = read_elf(data)
    assert (elf.bits, elf.machine) == (32, 3), "ELF32 i386 expected"
    return elf


def symbols(path: str | Path, table: str = ".symtab") -> dict[str, int]:
    """Defined symbols of one table, by name, via readelf."""
    out = subprocess.run(
        ["readelf", "-Ws", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, int] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("Symbol table"):
            current = line.split("'")[1]
            continue
        f = line.split()
        if current == table and len(f) >= 8 and f[0][:-1].isdigit() and f[6] != "UND":
            found.setdefault(re.sub(r"@.*", "", f[7]), int(f[1], 16))
    return found


# --- capstone --------------------------------------------------------------------------------


def _cs(detail: bool) -> Cs:
    cs = Cs(CS_ARCH_X86, CS_MODE_32)
    cs.detail = detail
    cs.skipdata = not detail
    return cs


CS_LITE = _cs(detail=False)
CS = _cs(detail=True)

Lite = tuple[int, int, str, str]  # address, size, mnemonic, operands


def is_site(mnemonic: str, op_str: str) -> bool:
    return (mnemonic, op_str) in (("int", "0x80"), ("call", "dword ptr gs:[0x10]"))


def is_control(mnemonic: str) -> bool:
    return bool(CONTROL.match(mnemonic.split()[-1])) or mnemonic == ".byte"


@dataclass(frozen=True)
class Sweep:
    runs: tuple[tuple[Lite, ...], ...]  # per text section, every instruction
    sites: tuple[tuple[int, int], ...]  # (run, index) of every site instruction
    targets: frozenset[int]


@functools.lru_cache(maxsize=8)
def sweep(data: bytes) -> Sweep:
    runs: list[tuple[Lite, ...]] = []
    sites: list[tuple[int, int]] = []
    targets: set[int] = set()
    for s in read_elf32(data).texts:
        run = tuple(CS_LITE.disasm_lite(data[s.offset : s.offset + s.size], s.addr))
        for k, (_, _, mnemonic, op_str) in enumerate(run):
            if is_site(mnemonic, op_str):
                sites.append((len(runs), k))
            t = branch_target(mnemonic, op_str)
            if t is not None:
                targets.add(t)
        runs.append(run)
    return Sweep(tuple(runs), tuple(sites), frozenset(targets))


def decode(code: bytes, addr: int) -> list[CsInsn]:
    insns = list(CS.disasm(code, addr))
    assert sum(i.size for i in insns) == len(code), f"capstone stopped early at {addr:#x}"
    return insns


# --- §4.3 applied to capstone's decode --------------------------------------------------------


def same_code(site: Lite, other: Lite) -> bool:
    """iced's Code equality for the site kinds: any ``int imm8``, any near ``call r/m32``."""
    if site[2] == "int":
        return other[2] == "int"
    return other[2] == "call" and not other[3].startswith("0x") and "word ptr" not in other[3][:5]


def expected_window(run: tuple[Lite, ...], i: int, targets: frozenset[int]) -> tuple[str, int, int]:
    addr, size, _, _ = site = run[i]
    end = addr + size
    if addr not in targets:  # (a), scanning from the site itself backwards
        for j in range(i, -1, -1):
            a, _, m, _ = run[j]
            if j != i and is_control(m):
                break
            if end - a >= 5:
                return Strategy.BEFORE, a, end
            if a in targets:
                break
    for j in range(i, len(run)):  # (b), from the site forwards
        a, n, m, _ = run[j]
        if not same_code(site, run[j]) and (a in targets or is_control(m)):
            break
        if a + n - addr >= 5:
            return Strategy.AFTER, addr, a + n
    if 0 < i < len(run) - 1:  # (c)
        p, nx = run[i - 1], run[i + 1]
        ok_n = (
            not is_control(nx[2])
            or nx[2] == "ret"
            or (nx[2] == "jmp" and branch_target(nx[2], nx[3]) == p[0])
        )
        if (
            p[1] + size + nx[1] >= 5
            and addr not in targets
            and nx[0] not in targets
            and not is_control(p[2])
            and ok_n
        ):
            return Strategy.BEFORE_AND_AFTER, p[0], nx[0] + nx[1]
    return Strategy.TRAPPED, 0, 0


# --- inputs ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def rewritten(path: str, abi: Abi = Abi.REDZONE) -> tuple[bytes, RewriteResult]:
    data = Path(path).read_bytes()
    return data, rewrite_elf(data, abi=abi)


@pytest.fixture(scope="module")
def binaries(build_sample: BuildSample) -> dict[str, str]:
    return {
        "libc.so.6": LIBC32,
        "ld-linux.so.2": LDSO32,
        "hello32-static": str(build_sample("hello32.c", "static32")),
        "hello32-dynamic": str(build_sample("hello32.c", "dynamic32")),
        "sites32": str(build_sample("sites32.S", "nostdlib32")),
    }


NAMES = ["libc.so.6", "ld-linux.so.2", "hello32-static", "hello32-dynamic", "sites32"]


def test_the_inputs_are_what_the_tests_assume() -> None:
    assert Path("/lib/ld-linux.so.2").resolve() == Path(LDSO32).resolve()
    for path in (LIBC32, LDSO32):
        data = Path(path).read_bytes()
        # Debian strips both: no .symtab, hence no _dl_sysinfo_int80 to skip (see below).
        assert ".symtab" not in {s.name for s in read_elf32(data).sections}


@pytest.mark.parametrize("name", NAMES)
def test_every_site_is_found_and_patched(binaries: dict[str, str], name: str) -> None:
    """Sites = capstone's int 0x80 / call gs:[0x10], minus _dl_sysinfo_int80; none unpatchable
    (upstream issue #301 saw ld-linux.so.2 fail with "insufficient bytes"; this one does not)."""
    data, res = rewritten(binaries[name])
    sw = sweep(data)
    skip = symbols(binaries[name]).get("_dl_sysinfo_int80")
    found = [sw.runs[r][k][0] for r, k in sw.sites]
    assert [s.address for s in res.sites] == [a for a in found if a != skip]
    assert res.outcome is Outcome.PATCHED and res.unpatchable == ()
    assert res.patched_sites == len(res.sites) > 0


@pytest.mark.parametrize("name", NAMES)
def test_each_window_follows_section_4_3(binaries: dict[str, str], name: str) -> None:
    data, res = rewritten(binaries[name])
    sw = sweep(data)
    by_addr = {sw.runs[r][k][0]: (r, k) for r, k in sw.sites}
    for site in res.sites:
        r, k = by_addr[site.address]
        strategy, start, end = expected_window(sw.runs[r], k, sw.targets)
        assert (site.strategy, site.window) == (strategy, (start, end)), hex(site.address)
        # no direct branch lands strictly inside a window (it would hit jmp bytes or NOPs)
        assert not any(start < t < end for t in sw.targets), hex(site.address)


def check_stub(data: bytes, out: bytes, elf: Elf, site: Site, slot: int) -> None:
    start, end = site.window
    where = f"site {site.address:#x}"
    assert site.stub_vaddr is not None, where
    guest = decode(elf.bytes_at(out, start, end - start), start)
    assert guest[0].mnemonic == "jmp" and guest[0].size == 5, where
    assert guest[0].operands[0].imm == site.stub_vaddr, where
    assert all(i.mnemonic == "nop" for i in guest[1:]), where
    orig = decode(elf.bytes_at(data, start, end - start), start)
    k = next(n for n, i in enumerate(orig) if i.address == site.address)
    assert is_site(orig[k].mnemonic, orig[k].op_str), where
    before, after = orig[:k], orig[k + 1 :]
    assert not any(is_control(i.mnemonic) for i in before), where
    blob_off = len(data) + (-len(data) % PAGE) + (site.stub_vaddr - slot)
    stub = decode(out[blob_off : blob_off + site.stub_size], site.stub_vaddr)
    # the borrowed instructions before, byte for byte
    assert [bytes(i.bytes) for i in stub[: len(before)]] == [bytes(i.bytes) for i in before], where
    seq = stub[len(before) : len(before) + 4]
    assert [i.mnemonic for i in seq] == ["push", "call", "pop", "call"], where
    assert (seq[0].op_str, seq[2].op_str) == ("eax", "eax"), where
    assert seq[1].operands[0].imm == seq[2].address, where  # call +0
    call = seq[3]
    (op,) = call.operands
    assert op.type == X86_OP_MEM and op.size == 4 and op.mem.base == X86_REG_EAX, where
    assert op.mem.index == 0 and bytes(call.bytes[:2]) == b"\xff\x90", where
    assert (seq[2].address + op.mem.disp) % U32 == slot, where  # eax = address of the pop
    tail = stub[len(before) + 4 :]
    assert [bytes(i.bytes) for i in tail[: len(after)]] == [bytes(i.bytes) for i in after], where
    rest = tail[len(after) :]
    falls_through = not after or not is_control(after[-1].mnemonic) or after[-1].mnemonic == "int"
    if falls_through:
        assert [(i.mnemonic, i.size) for i in rest] == [("jmp", 5)], where
        assert rest[0].operands[0].type == X86_OP_IMM and rest[0].operands[0].imm == end, where
    else:  # (c) with N = ret or the jmp back onto P: nothing after N
        assert site.strategy is Strategy.BEFORE_AND_AFTER and rest == [], where
    if site.strategy is Strategy.BEFORE:
        assert after == [] and end == site.address + orig[k].size, where
    elif site.strategy is Strategy.AFTER:
        assert before == [] and start == site.address, where
    else:
        assert len(before) == len(after) == 1, where


@pytest.mark.parametrize("name", NAMES)
def test_stubs_decode_to_the_section_4_shape(binaries: dict[str, str], name: str) -> None:
    data, res = rewritten(binaries[name])
    out = res.data
    elf = read_elf32(data)
    slot = elf.blob_vaddr
    at = slot + SLOT_SIZE
    for site in res.sites:
        assert site.stub_vaddr == at  # the stubs tile the blob in site order
        check_stub(data, out, elf, site, slot)
        at += site.stub_size
    assert res.trailer is not None and at == slot + res.trailer.size


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_20_byte_trailer(binaries: dict[str, str], name: str) -> None:
    data, res = rewritten(binaries[name])
    out = res.data
    elf = read_elf32(data)
    magic, offset, vaddr, size = struct.unpack("<8sIII", out[-20:])
    assert magic == b"LITEBOX0"
    assert offset == align(len(data), PAGE) and vaddr == elf.blob_vaddr
    assert size == SLOT_SIZE + sum(s.stub_size for s in res.sites)
    assert len(out) == offset + size + 20
    assert out[len(data) : offset + SLOT_SIZE] == bytes(offset - len(data) + SLOT_SIZE)
    # only the windows (and the fork jump) differ from the input
    expected = bytearray(data)
    for s in res.sites:
        at = elf.offset_of(s.window[0])
        expected[at : at + s.window[1] - s.window[0]] = out[at : at + s.window[1] - s.window[0]]
    if res.fork_patch:
        at = res.fork_patch.file_offset
        expected[at : at + 5] = out[at : at + 5]
    assert out[: len(data)] == bytes(expected)


@pytest.mark.parametrize("name", ["libc.so.6", "ld-linux.so.2", "hello32-static"])
def test_deterministic_idempotent_and_the_same_for_both_abis(
    binaries: dict[str, str], name: str
) -> None:
    data, res = rewritten(binaries[name])
    assert rewrite_elf(data, abi="redzone").data == res.data
    assert rewrite_elf(data, abi="resume").data == res.data  # stub-abi.md: one i386 stub
    again = rewrite_elf(res.data)
    assert again.outcome is Outcome.ALREADY_HOOKED and again.data == res.data


def test_dl_sysinfo_int80_is_left_alone_in_the_static_sample(binaries: dict[str, str]) -> None:
    path = binaries["hello32-static"]
    data, res = rewritten(path)
    at = symbols(path)["_dl_sysinfo_int80"]
    elf = read_elf32(data)
    assert elf.bytes_at(data, at, 2) == b"\xcd\x80"
    assert elf.bytes_at(res.data, at, 2) == b"\xcd\x80"
    assert at not in {s.address for s in res.sites}
    assert not any(s.window[0] <= at < s.window[1] for s in res.sites)


def test_static_sample_has_every_strategy_it_should(binaries: dict[str, str]) -> None:
    """The one (c) site is §4.4's: __libc_start_call_main's inlined exit loop,
    `mov %edx,%eax; int $0x80; jmp <the mov>`."""
    path = binaries["hello32-static"]
    data, res = rewritten(path)
    elf = read_elf32(data)
    main_at = symbols(path)["__libc_start_call_main"]
    (c,) = [s for s in res.sites if s.strategy is Strategy.BEFORE_AND_AFTER]
    assert main_at <= c.window[0] < main_at + 0x100
    loop = decode(elf.bytes_at(data, c.window[0], 6), c.window[0])
    assert [(i.mnemonic, i.op_str) for i in loop] == [
        ("mov", "eax, edx"),
        ("int", "0x80"),
        ("jmp", hex(c.window[0])),
    ]
    kinds = {elf.bytes_at(data, s.address, 2) for s in res.sites}
    assert kinds == {b"\xcd\x80", b"\x65\xff"}  # both site kinds occur


def test_labelled_sites_of_sites32(binaries: dict[str, str]) -> None:
    path = binaries["sites32"]
    _, res = rewritten(path)
    syms = symbols(path)
    got = {s.address: s.strategy for s in res.sites}
    assert {name: got[syms[name]] for name in syms if name.startswith("site_")} == {
        "site_ret": Strategy.BEFORE_AND_AFTER,
        "site_c_next": Strategy.BEFORE_AND_AFTER,
        "site_after": Strategy.AFTER,
        "site_before": Strategy.BEFORE,
        "site_exit": Strategy.BEFORE_AND_AFTER,
        "site_fail": Strategy.BEFORE,
    }
    run = subprocess.run([path], capture_output=True, timeout=10)
    assert (run.returncode, run.stdout) == (0, b"LITEBOX-PACK: I386 SITES OK\n")


def test_fork_jumps_to_vfork_in_libc() -> None:
    data, res = rewritten(LIBC32)
    dyn = symbols(LIBC32, ".dynsym")
    fp = res.fork_patch
    assert fp is not None and (fp.fork_symbol, fp.vfork_symbol) == ("__libc_fork", "__vfork")
    fork, vfork = dyn["__libc_fork"], dyn["__vfork"]
    elf = read_elf32(data)
    assert elf.bytes_at(data, fork, 4) != b"\xf3\x0f\x1e\xfb"  # no ENDBR32 on this build
    assert elf.bytes_at(res.data, fork, 5) == b"\xe9" + struct.pack("<i", vfork - (fork + 5))


def test_stripped_ld_so_sysinfo_int80_is_rewritten_like_upstream(binaries: dict[str, str]) -> None:
    """ld-linux.so.2 is stripped, so (as upstream, which reads .symtab only) its
    _dl_sysinfo_int80 — the 16-byte aligned `int $0x80; ret` — is a site. Its window starts in
    the alignment padding before it, so an indirect call to the function's own address would
    land inside the jmp. Only code that calls through gs:[0x10] reaches it, and every such call
    in a rewritten file is a site itself; the behaviour is kept for byte parity."""
    data, res = rewritten(LDSO32)
    elf = read_elf32(data)
    text = next(s for s in elf.texts if s.name == ".text")
    code = data[text.offset : text.offset + text.size]
    hits = [
        text.addr + m.start()
        for m in re.finditer(rb"\xcd\x80\xc3", code)
        if (text.addr + m.start()) % 16 == 0
    ]
    assert len(hits) == 1
    (site,) = [s for s in res.sites if s.address == hits[0]]
    assert site.strategy is Strategy.BEFORE and site.window[0] < site.address
    padding = decode(
        elf.bytes_at(data, site.window[0], site.address - site.window[0]), site.window[0]
    )
    assert all(i.mnemonic in ("nop", "xchg", "lea") for i in padding)
