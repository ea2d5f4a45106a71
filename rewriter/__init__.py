"""litebox-pack's syscall rewriter: a pure library, bytes in, bytes and an outcome out."""

from .elf import ElfError, ElfFile
from .errors import RewriteError, UnpatchableSyscallsError
from .fork_patch import ForkPatch
from .rewrite import POLICIES, Outcome, Policy, RewriteResult, Site, rewrite_elf
from .trailer import MAGIC, Trailer, TrailerCheck, TrailerState, check_trailer, read_trailer
from .x86_64 import Abi, Strategy

__all__ = [
    "MAGIC",
    "POLICIES",
    "Abi",
    "ElfError",
    "ElfFile",
    "ForkPatch",
    "Outcome",
    "Policy",
    "RewriteError",
    "RewriteResult",
    "Site",
    "Strategy",
    "Trailer",
    "TrailerCheck",
    "TrailerState",
    "UnpatchableSyscallsError",
    "check_trailer",
    "read_trailer",
    "rewrite_elf",
]
