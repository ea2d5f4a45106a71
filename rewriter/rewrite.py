"""``rewrite_elf``: bytes in, bytes and an account of what happened out."""

from __future__ import annotations

import contextlib
import gc
import struct
from collections.abc import Callable, Iterator
from typing import Any

from . import sweep
from .codemap import guard_sites
from .common import POLICIES, Abi, Policy, trap_fill
from .elf import EM_386, EM_X86_64, ET_REL, PT_PHDR, ElfFile
from .emit import Patch, SiteWork, emit_patched, trampoline_vaddr
from .errors import RewriteError
from .fork_patch import plan_fork_patch
from .i386 import rewrite_i386
from .result import Outcome, RewriteResult, marker_result, unchanged
from .trailer import TrailerState, check_trailer
from .x86_64 import plan_after, plan_before

SLOT_SIZE = 8
FEW_CANDIDATES = 32
BUN_FOOTER = b"\n---- Bun! ----\n"


def rewrite_elf(
    data: bytes,
    *,
    abi: Abi | str = Abi.REDZONE,
    unpatchable: Policy = "fail",
    fork_patch: bool = True,
    data_guard: bool = True,
) -> RewriteResult:
    """Rewrite every ``syscall`` of an x86-64 ELF into a jump to a per-site stub.

    With ``data_guard`` a site without evidence of being code is left alone and reported as
    data-in-code (see codemap.py); without, every linear-sweep site is patched, as upstream.
    Raises ``RewriteError`` (one line) for corrupt input or, under policy ``fail``, for sites with
    no room for a jump. Files it does not handle come back unchanged with a reason.
    """
    with _gc_paused():
        return _rewrite_elf(data, abi, unpatchable, fork_patch, data_guard)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one rewrite.

    A rewrite allocates tens of thousands of small acyclic containers (symbol rows, FDE
    ranges, instruction runs), all freed by reference counting. The young-generation collections
    they trigger each re-traverse the large sets and lists alive at the time: 19 collections,
    5-7 ms of libc's ~65 ms rewrite, most of the data guard's cost (measured with gc.callbacks).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rewrite_elf(
    data: bytes, abi: Abi | str, unpatchable: Policy, fork_patch: bool, data_guard: bool
) -> RewriteResult:
    abi = Abi(abi)
    if unpatchable not in POLICIES:
        raise ValueError(f"unpatchable policy must be one of {POLICIES}")
    data = bytes(data)
    if not data:
        raise RewriteError("empty file")
    if data.endswith(BUN_FOOTER):
        return unchanged(data, "Bun-packaged executable")
    if data[:4] != b"\x7fELF":
        return unchanged(data, "not an ELF file")
    elf = ElfFile(data)
    if not elf.little_endian:
        return unchanged(data, "big-endian ELF")
    if elf.type == ET_REL:
        return unchanged(data, "relocatable object")
    if not elf.is64 and elf.machine == EM_386:
        return rewrite_i386(
            data,
            elf,
            abi=abi,
            unpatchable=unpatchable,
            fork_patch=fork_patch,
            data_guard=data_guard,
        )
    if not elf.is64 or elf.machine != EM_X86_64:
        return unchanged(data, f"other architecture (ELF{elf.bits} {elf.machine_name})")
    texts = elf.text_sections
    if not texts:
        return unchanged(data, "no executable section")
    if check_trailer(data).state is TrailerState.VALID:
        return RewriteResult(data, Outcome.ALREADY_HOOKED, "already has a LITEBOX0 trailer")
    if all(data.find(sweep.SYSCALL, s.offset, s.offset + s.size) < 0 for s in texts):
        return marker_result(data, 64, 0)

    fixed = _fix_phdr_alignment(elf, data)
    if fixed is not data:
        elf = ElfFile(fixed)
        texts = elf.text_sections
    view = memoryview(fixed)
    codes = [view[s.offset : s.offset + s.size] for s in texts]
    # Upstream's 8 MiB decode chunks only where its bytes are asked for: the restart at a chunk
    # end can read a straddling immediate as instructions.
    chunked = abi is Abi.RESUME and not data_guard
    pairs = [sweep.find_pairs(fixed, s.offset, s.offset + s.size) for s in texts]
    candidates = sum(map(len, pairs))
    # Few pairs are usually false hits inside other instructions: prove that cheaply first,
    # without the branch-target pass that real sites need.
    if candidates <= FEW_CANDIDATES and not any(
        sweep.sweep_section(c, s.addr, None, p, chunked=chunked).sites
        for c, s, p in zip(codes, texts, pairs, strict=True)
    ):
        return marker_result(data, 64, candidates)
    targets: set[int] = set()
    sweeps = [
        sweep.sweep_section(c, s.addr, targets, p, chunked=chunked)
        for c, s, p in zip(codes, texts, pairs, strict=True)
    ]
    targets.discard(0)
    sites = [(sec, run, i) for sec, sw in zip(texts, sweeps, strict=True) for run, i in sw.sites]
    if not sites:
        return marker_result(data, 64, candidates)
    guard = guard_sites(elf, fixed, texts, [(sec, run[i].ip) for sec, run, i in sites], data_guard)
    sites = [(sec, run, i) for sec, run, i in sites if run[i].ip not in guard.data_in_code]
    if not sites:
        return guard.marker(data, 64, candidates)

    del codes, view
    blob_vaddr = trampoline_vaddr(elf)
    refuse = abi is Abi.REDZONE  # resume keeps upstream's overlapping windows, for byte parity

    def plans(run: list[Any], i: int) -> Callable[[int], Iterator[Patch]]:
        def candidates_at(stub_at: int) -> Iterator[Patch]:
            for plan in (plan_before, plan_after):
                patch = plan(run, i, targets, abi, stub_at, blob_vaddr)
                if patch is not None:
                    yield patch

        return candidates_at

    work = [SiteWork(sec, run[i].ip, run[i].len, plans(run, i)) for sec, run, i in sites]
    result = emit_patched(
        fixed,
        work,
        blob_vaddr=blob_vaddr,
        slot_size=SLOT_SIZE,
        bits=64,
        abi=abi,
        unpatchable=unpatchable,
        refuse_overlap=refuse,
        trap=trap_fill,
        fork=lambda: plan_fork_patch(elf, fixed) if fork_patch else None,
        candidates=candidates,
    )
    return guard.annotate(result)


def _fix_phdr_alignment(elf: ElfFile, data: bytes) -> bytes:
    """Move an unaligned program-header table to the next 8-byte boundary (reference §8.6)."""
    mis = elf.phoff % 8
    if not elf.is64 or mis == 0 or elf.phnum == 0:
        return data
    shift = 8 - mis
    table_end = elf.phoff + elf.phnum * elf.phentsize
    if table_end + shift > len(data) or any(data[table_end : table_end + shift]):
        return data
    out = bytearray(data)
    out[elf.phoff + shift : table_end + shift] = data[elf.phoff : table_end]
    out[elf.phoff : elf.phoff + shift] = bytes(shift)
    struct.pack_into("<Q", out, 32, elf.phoff + shift)  # e_phoff
    for k, seg in enumerate(elf.segments):
        if seg.type == PT_PHDR:
            base = elf.phoff + shift + k * elf.phentsize
            struct.pack_into(
                "<QQQ", out, base + 8, seg.offset + shift, seg.vaddr + shift, seg.paddr + shift
            )
    return bytes(out)
