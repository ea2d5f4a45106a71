"""What the loader reads of an object: ELF class, machine, type, PT_INTERP and the dynamic section.

Read once per file identity (device, inode, size, mtime), from the first block when it holds the
headers, otherwise through a read-only mapping of the whole file.
"""

from __future__ import annotations

import functools
import mmap
import os
import stat
from dataclasses import dataclass

from rewriter.elf import DynamicInfo, ElfError, ElfFile

HEAD_BYTES = 64 * 1024  # enough for the headers and .dynstr of almost every object


class BadObject(Exception):
    """ld.so would refuse this file with the given reason."""


@dataclass(frozen=True)
class Facts:
    is64: bool
    machine: int
    type: int
    little_endian: bool
    interpreter: str | None
    dynamic: DynamicInfo | None

    @property
    def bits(self) -> int:
        return 64 if self.is64 else 32


def parse_elf(data: bytes) -> Facts:
    elf = ElfFile(data)
    return Facts(elf.is64, elf.machine, elf.type, elf.little_endian, elf.interpreter, elf.dynamic)


@functools.lru_cache(maxsize=8192)
def facts_cached(host: str, _identity: tuple[int, int, int, int]) -> Facts | str:
    """Facts of an ELF file, or the reason it is not one. Keyed by the file's identity."""
    try:
        with open(host, "rb") as f:
            data = f.read(HEAD_BYTES)
            if len(data) < 4 or data[:4] != b"\x7fELF":
                return "invalid ELF header" if len(data) >= 64 else "file too short"
            try:
                return parse_elf(data)
            except ElfError:
                if os.fstat(f.fileno()).st_size <= len(data):
                    raise
            # Headers or strings lie past the first block: map the whole file (only the pages
            # the parser touches are read, so a 100 MB library costs little) and retry.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as whole:
                return parse_elf(whole)  # type: ignore[arg-type]
    except ElfError as e:
        return f"corrupt ELF file: {e}"
    except OSError as e:
        return f"cannot read file data: {e.strerror or e}"


def read_facts(host: str, st: os.stat_result) -> Facts:
    if stat.S_ISDIR(st.st_mode):
        raise BadObject("cannot read file data: Is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise BadObject("not a regular file")  # never open a FIFO or a device
    got = facts_cached(host, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    if isinstance(got, str):
        raise BadObject(got)
    return got


@functools.lru_cache(maxsize=64)
def built_for_lib32(interp_host: str) -> bool:
    """Is this i386 loader the biarch build whose system directories are /lib32 and /usr/lib32?

    Decided from the loader's own bytes (its compiled-in search path), not from where it sits:
    in a bundle the loader is a plain file at its PT_INTERP path (/lib/ld-linux.so.2).
    """
    try:
        with open(interp_host, "rb") as f:
            return b"\0/usr/lib32/\0" in f.read(4 << 20)
    except OSError:
        return False


def read_head(host: str, limit: int) -> bytes:
    with open(host, "rb") as f:
        return f.read(limit)
