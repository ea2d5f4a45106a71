"""Applying planned sites to a file: shared by the x86-64 and i386 rewriters.

Each architecture finds its sites and knows how to plan a window and a stub for one; the rest is
the same everywhere: stubs appended to a blob after the callback slot, jumps written over the
windows, unpatchable sites trapped or kept, the fork→vfork jump, zero padding to a page, the
blob and the trailer.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .common import JMP_LEN, JMP_REL32, NOP, Abi, Policy, Strategy, rel32
from .elf import ElfError, ElfFile
from .errors import RewriteError, UnpatchableSyscallsError
from .fork_patch import ForkPatch, fork_jump
from .result import Outcome, RewriteResult, Site
from .trailer import PAGE, Trailer

if TYPE_CHECKING:
    from .elf import Section


class Patch(NamedTuple):
    """One planned site: the guest window it replaces and the stub that serves it."""

    site: int
    strategy: Strategy
    start: int  # first guest byte replaced
    end: int  # one past the last guest byte replaced
    stub: bytes

    def guest_bytes(self, stub_at: int, rel: Callable[[int, int], bytes] = rel32) -> bytes:
        jmp = JMP_REL32 + rel(stub_at, self.start + JMP_LEN)
        return jmp + bytes([NOP]) * (self.end - self.start - JMP_LEN)


class SiteWork(NamedTuple):
    """A site to patch: where it is, and its candidate patches for a stub at a given address,
    best first (produced lazily: re-encoding is only paid for the strategies tried)."""

    section: Section
    address: int
    length: int
    plans: Callable[[int], Iterator[Patch]]


class Windows:
    """Guest ranges already replaced by jumps, for overlap checks in O(log n)."""

    MAX_LEN = 64  # no window is longer: a few borrowed instructions and the site

    def __init__(self) -> None:
        self._items: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        bisect.insort(self._items, (start, end))

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        lo = bisect.bisect_left(self._items, (start - self.MAX_LEN, 0))
        hi = bisect.bisect_left(self._items, (end, 0))
        return [w for w in self._items[lo:hi] if w[1] > start]


def trampoline_vaddr(elf: ElfFile) -> int:
    """Reference §2.1: the page-aligned end of the highest PT_LOAD (entries whose end does not
    fit the class are ignored, as upstream does); ``emit_patched`` checks the result fits."""
    limit = 1 << elf.bits
    ends = [s.vaddr + s.memsz for s in elf.loads if s.vaddr + s.memsz < limit]
    if not ends:
        raise ElfError("no PT_LOAD segments")
    return (max(ends) + PAGE - 1) // PAGE * PAGE


def emit_patched(
    base: bytes,
    work: Sequence[SiteWork],
    *,
    blob_vaddr: int,
    slot_size: int,
    bits: int,
    abi: Abi,
    unpatchable: Policy,
    refuse_overlap: bool,
    trap: Callable[[int], bytes],
    fork: Callable[[], ForkPatch | None],
    candidates: int,
    rel: Callable[[int, int], bytes] = rel32,
) -> RewriteResult:
    """Patch every site of ``work`` in order and build the rewritten file.

    With ``refuse_overlap`` a window that overlaps an earlier one is not used (the next
    candidate is tried); without, it is used as upstream does, and reported as a warning.
    ``rel`` encodes the guest jumps' rel32 (i386 wraps at 4 GiB; x86-64 must stay in range).
    """
    limit = 1 << bits
    if blob_vaddr >= limit:
        raise RewriteError(f"trampoline vaddr {blob_vaddr:#x} does not fit the {bits}-bit trailer")
    edits: list[tuple[int, bytes]] = []  # (file offset, new bytes), in the order applied
    blob = bytearray(slot_size)  # the callback slot; the loader writes the callback address
    reports: list[Site] = []
    windows = Windows()
    warnings: list[str] = []
    for sec, addr, length, plans in work:
        stub_at = blob_vaddr + len(blob)
        patch = next(
            (
                p
                for p in plans(stub_at)
                if not (refuse_overlap and windows.overlapping(p.start, p.end))
            ),
            None,
        )
        if patch is None:
            reports.append(Site(addr, Strategy.KEPT if unpatchable == "keep" else Strategy.TRAPPED))
            if unpatchable != "keep":
                edits.append((sec.offset + (addr - sec.addr), trap(length)))
            continue
        # Windows come from the original decode, as upstream's did: a later one may overwrite an
        # earlier jump. Where that is allowed (byte parity), say so.
        for w in () if refuse_overlap else windows.overlapping(patch.start, patch.end):
            warnings.append(
                f"site {addr:#x}: window [{patch.start:#x}, {patch.end:#x}) overlaps "
                f"[{w[0]:#x}, {w[1]:#x}) (kept for upstream byte parity)"
            )
        edits.append((sec.offset + (patch.start - sec.addr), patch.guest_bytes(stub_at, rel)))
        blob += patch.stub
        windows.add(patch.start, patch.end)
        reports.append(
            Site(addr, patch.strategy, (patch.start, patch.end), stub_at, len(patch.stub))
        )

    trapped = [s.address for s in reports if s.strategy is Strategy.TRAPPED]
    if trapped and unpatchable == "fail":
        raise UnpatchableSyscallsError(trapped)

    fork_plan = fork()
    if fork_plan is not None:
        for w in windows.overlapping(fork_plan.jump_vaddr, fork_plan.jump_vaddr + JMP_LEN):
            raise RewriteError(
                f"fork→vfork jump at {fork_plan.jump_vaddr:#x} overlaps the patched window "
                f"[{w[0]:#x}, {w[1]:#x})"
            )
        edits.append((fork_plan.file_offset, fork_jump(fork_plan)))

    file_offset = (len(base) + PAGE - 1) // PAGE * PAGE
    for what, value in (("file offset", file_offset), ("end", blob_vaddr + len(blob))):
        if value >= limit:
            raise RewriteError(f"trampoline {what} {value:#x} does not fit the {bits}-bit trailer")
    trailer = Trailer(file_offset, blob_vaddr, len(blob), bits)
    tail = bytes(file_offset - len(base)) + blob + trailer.pack()
    return RewriteResult(
        assemble(base, edits, tail),
        Outcome.PATCHED,
        abi=abi,
        sites=tuple(reports),
        trailer=trailer,
        fork_patch=fork_plan,
        candidates=candidates,
        warnings=tuple(warnings),
    )


def assemble(base: bytes, edits: list[tuple[int, bytes]], tail: bytes) -> bytes:
    """``base`` with ``edits`` applied, then ``tail``, copying ``base`` only once."""
    ordered = sorted(edits, key=lambda e: e[0])
    if any(a[0] + len(a[1]) > b[0] for a, b in itertools.pairwise(ordered)):
        # Overlapping windows (upstream parity): later edits win.
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
