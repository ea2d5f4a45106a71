"""Facts shared by both architectures' rewriters: the stub ABIs, the strategies, the jump."""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Literal

from .errors import RewriteError

JMP_LEN = 5
JMP_REL32 = b"\xe9"
NOP = 0x90
TRAP = b"\xf1\xf4"  # ICEBP; HLT: same length as syscall, recognisable as a poisoned site


# What to do with a syscall that has no room for a jump (--unpatchable).
Policy = Literal["fail", "trap", "keep"]
POLICIES: tuple[Policy, ...] = ("fail", "trap", "keep")


class Abi(StrEnum):
    REDZONE = "redzone"
    RESUME = "resume"


class Strategy(StrEnum):
    BEFORE = "before"  # displaced instructions precede the syscall (strategy a)
    AFTER = "after"  # displaced instructions follow it (strategy b)
    BEFORE_AND_AFTER = "before-and-after"  # one instruction each side (strategy c, i386 only)
    TRAPPED = "trapped"  # unpatchable, overwritten with F1 F4
    KEPT = "kept"  # unpatchable, syscall left in place


def trap_fill(length: int) -> bytes:
    """F1 F4 over a site of ``length`` bytes, the rest NOP-filled (as upstream does): a prefixed
    syscall's leftover bytes would otherwise change how the next instruction decodes."""
    return TRAP + bytes([NOP]) * (length - len(TRAP))


def rel32(target: int, next_ip: int) -> bytes:
    d = target - next_ip
    if not -(1 << 31) <= d < (1 << 31):
        raise RewriteError(f"displacement from {next_ip:#x} to {target:#x} is out of rel32 range")
    return struct.pack("<i", d)
