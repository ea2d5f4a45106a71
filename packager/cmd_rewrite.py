"""``litebox-pack rewrite``: rewrite one ELF file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from rewriter import Abi, Outcome, RewriteError, rewrite_elf

from .console import PATH_ARG, help_text, print_json, user_errors
from .errors import UserError
from .fsutil import read_input, write_atomic
from .options import AbiOpt, NoDataGuardOpt, NoForkPatchOpt, UnpatchableOpt
from .schemas import FORMAT


def register(app: typer.Typer) -> None:
    app.command("rewrite", help=help_text(rewrite.__doc__))(rewrite)


@user_errors
def rewrite(
    input: Annotated[
        Path,
        typer.Argument(
            help="The ELF file to rewrite.",
            metavar="INPUT",
            click_type=PATH_ARG,
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Where to write the result (default: INPUT.hooked).",
        ),
    ] = None,
    abi: AbiOpt = Abi.REDZONE,
    unpatchable: UnpatchableOpt = "fail",
    no_fork_patch: NoForkPatchOpt = False,
    no_data_guard: NoDataGuardOpt = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Rewrite every syscall of one ELF into a jump to a trampoline stub.

    Writes FILE (-o) atomically with INPUT's mode and prints a one-line summary (or JSON).
    Files the rewriter does not handle (not ELF, other architecture, ...) are copied and reported.
    """
    data = read_input(input)
    out = output or Path(str(input) + ".hooked")
    try:
        result = rewrite_elf(
            data,
            abi=abi,
            unpatchable=unpatchable,
            fork_patch=not no_fork_patch,
            data_guard=not no_data_guard,
        )
    except RewriteError as e:
        raise UserError(f"{input}: {e}") from None
    write_atomic(out, result.data, os.stat(input).st_mode & 0o7777)
    if json_out:
        doc = {"format": FORMAT["rewrite"], "input": str(input), "output": str(out)}
        print_json({**doc, **result.to_json()})
    else:
        note = "" if result.outcome is not Outcome.UNCHANGED else " (copied as is)"
        typer.echo(f"{input} -> {out}: {result.summary()}{note}")
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
