"""fork → vfork: make libc's fork entry jump to vfork (reference §7, with ENDBR64 kept).

LiteBox performs vfork cheaply and fork not at all, so a libc that defines both gets a 5-byte
``JMP rel32`` at fork's entry. A leading ENDBR64 stays in place so indirect-branch tracking still
accepts calls through the PLT; the jump is written after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import JMP_LEN, JMP_REL32, rel32
from .elf import SHT_DYNSYM, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC, ElfFile, Section
from .errors import RewriteError

FORK_NAMES = ("__libc_fork", "__fork")
VFORK_NAMES = ("__libc_vfork", "__vfork")
ENDBR64 = b"\xf3\x0f\x1e\xfa"


@dataclass(frozen=True, slots=True)
class ForkPatch:
    fork_symbol: str
    fork_vaddr: int
    vfork_symbol: str
    vfork_vaddr: int
    jump_vaddr: int  # where the JMP is written (after ENDBR64 when present)
    file_offset: int


def _find(elf: ElfFile, names: tuple[str, ...]) -> tuple[str, int] | None:
    """First function symbol named ``names[0]``, else ``names[1]``...; .dynsym before .symtab."""
    tables = [s for s in elf.sections if s.type == SHT_DYNSYM]
    tables += [s for s in elf.sections if s.type == SHT_SYMTAB]
    found: dict[str, int] = {}
    for table in tables:
        for sym in elf.symbols(table, names):
            if sym.type in (STT_FUNC, STT_GNU_IFUNC) and sym.value:
                found.setdefault(sym.name, sym.value)
        for name in names:
            if name in found:
                return name, found[name]
    return None


def plan_fork_patch(elf: ElfFile, data: bytes | bytearray) -> ForkPatch | None:
    """Where the fork→vfork jump goes, or None when the ELF lacks either function."""
    fork = _find(elf, FORK_NAMES)
    vfork = _find(elf, VFORK_NAMES)
    if fork is None or vfork is None:
        return None
    text = _containing_text(elf.text_sections, fork[1])
    if text is None:
        raise RewriteError(f"fork→vfork: {fork[0]} at {fork[1]:#x} is not in an executable section")
    off = text.offset + (fork[1] - text.addr)
    at = fork[1]
    if data[off : off + 4] == ENDBR64:
        at += 4
        off += 4
    if at + JMP_LEN > text.addr + text.size:
        raise RewriteError(f"fork→vfork: the jump at {at:#x} would leave section {text.name}")
    return ForkPatch(fork[0], fork[1], vfork[0], vfork[1], at, off)


def fork_jump(p: ForkPatch) -> bytes:
    return JMP_REL32 + rel32(p.vfork_vaddr, p.jump_vaddr + JMP_LEN)


def _containing_text(texts: list[Section], vaddr: int) -> Section | None:
    return next((s for s in texts if s.addr <= vaddr < s.addr + s.size), None)
