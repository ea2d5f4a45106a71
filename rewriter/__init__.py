"""litebox-pack's syscall rewriter: a pure library, bytes in, bytes and an outcome out."""

from .common import POLICIES, Abi, Policy, Strategy
from .elf import ElfError, ElfFile
from .errors import RewriteError, UnpatchableSyscallsError
from .fork_patch import ForkPatch
from .result import Outcome, RewriteResult, Site
from .rewrite import rewrite_elf
from .trailer import MAGIC, Trailer, TrailerCheck, TrailerState, check_trailer, read_trailer

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
