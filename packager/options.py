"""Command-line options shared by ``rewrite`` and ``pack``."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from rewriter import Abi

AbiOpt = Annotated[
    Abi,
    typer.Option(
        "--abi",
        case_sensitive=False,
        metavar="redzone|resume",
        help="Stub ABI: redzone (reserves the red zone, R11 = restart address) or resume "
        "(byte-compatible with upstream LiteBox).",
    ),
]
UnpatchableOpt = Annotated[
    Literal["fail", "trap", "keep"],
    typer.Option(
        "--unpatchable",
        metavar="fail|trap|keep",
        help="A syscall with no room for a jump: fail (error naming every address), trap "
        "(write F1 F4 there) or keep (leave the syscall, report it).",
    ),
]
NoDataGuardOpt = Annotated[
    bool,
    typer.Option(
        "--no-data-guard",
        help="Patch every syscall the linear sweep finds, also those with no evidence of being "
        "code (upstream's behaviour); by default such data-in-code sites are left alone.",
    ),
]
NoForkPatchOpt = Annotated[
    bool,
    typer.Option("--no-fork-patch", help="Do not redirect libc's fork to vfork."),
]
