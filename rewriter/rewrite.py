"""``rewrite_elf``: bytes in, bytes and an account of what happened out."""

from __future__ import annotations

import bisect
import itertools
import struct
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from . import sweep
from .elf import EM_386, EM_X86_64, ET_REL, PT_PHDR, ElfError, ElfFile
from .errors import RewriteError, UnpatchableSyscallsError
from .fork_patch import ForkPatch, fork_jump, plan_fork_patch
from .trailer import PAGE, Trailer, TrailerState, check_trailer, marker
from .x86_64 import TRAP, Abi, Patch, Strategy, plan_after, plan_before

Policy = Literal["fail", "trap", "keep"]
POLICIES: tuple[Policy, ...] = ("fail", "trap", "keep")
SLOT_SIZE = 8
FEW_CANDIDATES = 32
BUN_FOOTER = b"\n---- Bun! ----\n"


class Outcome(StrEnum):
    PATCHED = "patched"
    MARKER = "checked-nothing-to-patch"
    ALREADY_HOOKED = "already-hooked"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class Site:
    """One ``syscall`` instruction and what was done with it."""

    address: int
    strategy: Strategy
    window: tuple[int, int] = (0, 0)  # guest bytes replaced by the jump (empty when unpatched)
    stub_vaddr: int | None = None
    stub_size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "strategy": self.strategy.value,
            "window": list(self.window),
            "stub_vaddr": self.stub_vaddr,
            "stub_size": self.stub_size,
        }


@dataclass(frozen=True)
class RewriteResult:
    data: bytes
    outcome: Outcome
    reason: str = ""
    abi: Abi | None = None
    sites: tuple[Site, ...] = ()
    trailer: Trailer | None = None
    fork_patch: ForkPatch | None = None
    candidates: int = 0  # 0F 05 byte pairs in executable sections
    warnings: tuple[str, ...] = field(default=())

    @property
    def unpatchable(self) -> tuple[int, ...]:
        return tuple(
            s.address for s in self.sites if s.strategy in (Strategy.TRAPPED, Strategy.KEPT)
        )

    @property
    def patched_sites(self) -> int:
        return sum(1 for s in self.sites if s.stub_vaddr is not None)

    @property
    def strategy_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.strategy.value for s in self.sites).items()))

    def summary(self) -> str:
        if self.outcome is Outcome.PATCHED:
            assert self.trailer is not None
            counts = ", ".join(f"{n} {k}" for k, n in self.strategy_counts.items())
            text = (
                f"patched {self.patched_sites} syscall site(s) ({counts}); "
                f"trampoline {self.trailer.size} bytes at vaddr {self.trailer.vaddr:#x}"
            )
            if self.unpatchable:
                text += f"; {len(self.unpatchable)} unpatchable"
            if self.fork_patch:
                text += "; fork→vfork"
            return text
        if self.outcome is Outcome.MARKER:
            return "checked, nothing to patch (header-only marker)"
        if self.outcome is Outcome.ALREADY_HOOKED:
            return "already rewritten; left as is"
        return f"left unchanged: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        t = self.trailer
        fp = self.fork_patch
        return {
            "outcome": self.outcome.value,
            "reason": self.reason or None,
            "abi": self.abi.value if self.abi else None,
            "candidates": self.candidates,
            "sites_patched": self.patched_sites,
            "strategies": self.strategy_counts,
            "unpatchable": list(self.unpatchable),
            "trampoline": (
                {"file_offset": t.file_offset, "vaddr": t.vaddr, "size": t.size} if t else None
            ),
            "fork_patch": (
                {
                    "fork": fp.fork_symbol,
                    "vfork": fp.vfork_symbol,
                    "jump_vaddr": fp.jump_vaddr,
                }
                if fp
                else None
            ),
            "sites": [s.to_json() for s in self.sites],
            "warnings": list(self.warnings),
        }


def _unchanged(data: bytes, reason: str) -> RewriteResult:
    return RewriteResult(data, Outcome.UNCHANGED, reason)


def rewrite_elf(
    data: bytes,
    *,
    abi: Abi | str = Abi.REDZONE,
    unpatchable: Policy = "fail",
    fork_patch: bool = True,
) -> RewriteResult:
    """Rewrite every ``syscall`` of an x86-64 ELF into a jump to a per-site stub.

    Raises ``RewriteError`` (one line) for corrupt input or, under policy ``fail``, for sites with
    no room for a jump. Files it does not handle come back unchanged with a reason.
    """
    abi = Abi(abi)
    if unpatchable not in POLICIES:
        raise ValueError(f"unpatchable policy must be one of {POLICIES}")
    data = bytes(data)
    if not data:
        raise RewriteError("empty file")
    if data.endswith(BUN_FOOTER):
        return _unchanged(data, "Bun-packaged executable")
    if data[:4] != b"\x7fELF":
        return _unchanged(data, "not an ELF file")
    elf = ElfFile(data)
    if not elf.little_endian:
        return _unchanged(data, "big-endian ELF")
    if elf.type == ET_REL:
        return _unchanged(data, "relocatable object")
    if not elf.is64 and elf.machine == EM_386:
        from .i386 import rewrite_i386  # imported here: i386 builds on this module's types

        return rewrite_i386(data, elf, abi=abi, unpatchable=unpatchable, fork_patch=fork_patch)
    if not elf.is64 or elf.machine != EM_X86_64:
        return _unchanged(data, f"other architecture (ELF{elf.bits} {elf.machine_name})")
    texts = elf.text_sections
    if not texts:
        return _unchanged(data, "no executable section")
    if check_trailer(data).state is TrailerState.VALID:
        return RewriteResult(data, Outcome.ALREADY_HOOKED, "already has a LITEBOX0 trailer")
    if all(data.find(sweep.SYSCALL, s.offset, s.offset + s.size) < 0 for s in texts):
        return _marker(data, 0)

    fixed = _fix_phdr_alignment(elf, data)
    if fixed is not data:
        elf = ElfFile(fixed)
        texts = elf.text_sections
    view = memoryview(fixed)
    codes = [view[s.offset : s.offset + s.size] for s in texts]
    pairs = [sweep.find_pairs(fixed, s.offset, s.offset + s.size) for s in texts]
    candidates = sum(map(len, pairs))
    # Few pairs are usually false hits inside other instructions: prove that cheaply first,
    # without the branch-target pass that real sites need.
    if candidates <= FEW_CANDIDATES and not any(
        sweep.sweep_section(c, s.addr, None, p).sites
        for c, s, p in zip(codes, texts, pairs, strict=True)
    ):
        return _marker(data, candidates)
    targets: set[int] = set()
    sweeps = [
        sweep.sweep_section(c, s.addr, targets, p)
        for c, s, p in zip(codes, texts, pairs, strict=True)
    ]
    targets.discard(0)
    sites = [(sec, run, i) for sec, sw in zip(texts, sweeps, strict=True) for run, i in sw.sites]
    if not sites:
        return _marker(data, candidates)

    del codes, view
    blob_vaddr = _trampoline_vaddr(elf)
    slot = blob_vaddr
    edits: list[tuple[int, bytes]] = []  # (file offset, new bytes), in the order applied
    blob = bytearray(SLOT_SIZE)
    reports: list[Site] = []
    windows = _Windows()
    warnings: list[str] = []
    for sec, run, i in sites:
        stub_at = blob_vaddr + len(blob)
        patch = _plan(run, i, targets, abi, stub_at, slot, windows)
        sc = run[i].ip
        if patch is None:
            reports.append(Site(sc, Strategy.KEPT if unpatchable == "keep" else Strategy.TRAPPED))
            if unpatchable != "keep":
                edits.append((sec.offset + (sc - sec.addr), TRAP))
            continue
        for w in windows.overlapping(patch.start, patch.end) if abi is Abi.RESUME else ():
            warnings.append(
                f"site {sc:#x}: window [{patch.start:#x}, {patch.end:#x}) overlaps "
                f"[{w[0]:#x}, {w[1]:#x}) (kept for upstream byte parity)"
            )
        edits.append((sec.offset + (patch.start - sec.addr), patch.guest_bytes(stub_at)))
        blob += patch.stub
        windows.add(patch.start, patch.end)
        reports.append(Site(sc, patch.strategy, (patch.start, patch.end), stub_at, len(patch.stub)))

    unpatched = [s.address for s in reports if s.strategy is Strategy.TRAPPED]
    if unpatched and unpatchable == "fail":
        raise UnpatchableSyscallsError(unpatched)

    fork = plan_fork_patch(elf, fixed) if fork_patch else None
    if fork is not None:
        for w in windows.overlapping(fork.jump_vaddr, fork.jump_vaddr + 5):
            raise RewriteError(
                f"fork→vfork jump at {fork.jump_vaddr:#x} overlaps the patched window "
                f"[{w[0]:#x}, {w[1]:#x})"
            )
        edits.append((fork.file_offset, fork_jump(fork)))

    file_offset = _align(len(fixed), PAGE)
    trailer = Trailer(file_offset, blob_vaddr, len(blob))
    tail = bytes(file_offset - len(fixed)) + blob + trailer.pack()
    return RewriteResult(
        _assemble(fixed, edits, tail),
        Outcome.PATCHED,
        abi=abi,
        sites=tuple(reports),
        trailer=trailer,
        fork_patch=fork,
        candidates=candidates,
        warnings=tuple(warnings),
    )


def _plan(
    run: list[Any],
    i: int,
    targets: set[int],
    abi: Abi,
    stub_at: int,
    slot: int,
    windows: _Windows,
) -> Patch | None:
    for plan in (plan_before, plan_after):
        patch = plan(run, i, targets, abi, stub_at, slot)
        if patch is None:
            continue
        # Upstream computes every window from the original decode and may let a later window
        # overwrite an earlier jump; the redzone ABI refuses such a window instead.
        if abi is Abi.REDZONE and windows.overlapping(patch.start, patch.end):
            continue
        return patch
    return None


class _Windows:
    """Guest ranges already replaced by jumps, for overlap checks in O(log n)."""

    MAX_LEN = 64  # no window is longer: at most three borrowed instructions and the syscall

    def __init__(self) -> None:
        self._items: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        bisect.insort(self._items, (start, end))

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        lo = bisect.bisect_left(self._items, (start - self.MAX_LEN, 0))
        hi = bisect.bisect_left(self._items, (end, 0))
        return [w for w in self._items[lo:hi] if w[1] > start]


def _assemble(base: bytes, edits: list[tuple[int, bytes]], tail: bytes) -> bytes:
    """``base`` with ``edits`` applied, then ``tail``, copying ``base`` only once."""
    ordered = sorted(edits, key=lambda e: e[0])
    if any(a[0] + len(a[1]) > b[0] for a, b in itertools.pairwise(ordered)):
        # Overlapping windows (upstream parity in the resume ABI): later edits win.
        out = bytearray(base)
        for off, new in edits:
            out[off : off + len(new)] = new
        return bytes(out + tail)
    view = memoryview(base)
    parts: list[bytes | memoryview] = []
    pos = 0
    for off, new in ordered:
        parts += (view[pos:off], new)
        pos = off + len(new)
    parts += (view[pos:], tail)
    return b"".join(parts)


def _marker(data: bytes, candidates: int) -> RewriteResult:
    t = marker()
    return RewriteResult(data + t.pack(), Outcome.MARKER, trailer=t, candidates=candidates)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _trampoline_vaddr(elf: ElfFile) -> int:
    ends = [s.vaddr + s.memsz for s in elf.loads if s.vaddr + s.memsz < 1 << 64]
    if not ends:
        raise ElfError("no PT_LOAD segments")
    vaddr = _align(max(ends), PAGE)
    if vaddr >= 1 << 64:
        raise RewriteError("trampoline address overflows")
    return vaddr


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
