"""``litebox-pack run``: execute a bundle natively with its trampolines live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .console import PATH_ARG, TEXT_ARG, help_text, user_errors
from .errors import UserError


def register(app: typer.Typer) -> None:
    app.command("run", help=help_text(run.__doc__), no_args_is_help=True)(run)


@user_errors
def run(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="The bundle: a .tar or a directory laid out like one.",
            metavar="BUNDLE",
            click_type=PATH_ARG,
            show_default=False,
        ),
    ],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After --: PROGRAM (an absolute path inside the bundle) and its arguments; "
            "with --hooked only the arguments.",
            metavar="-- PROGRAM ARGS...",
            click_type=TEXT_ARG,
            show_default=False,
        ),
    ] = None,
    abi: Annotated[
        Literal["auto", "redzone", "resume"],
        typer.Option(
            "--abi",
            metavar="auto|redzone|resume",
            help="Stub ABI of the bundle: auto reads the manifest, else the stub bytes. i386 "
            "programs have a single stub form (the report says i386).",
        ),
    ] = "auto",
    trace: Annotated[
        bool,
        typer.Option("--trace", help="Print each trampolined syscall on stderr."),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at the first syscall that escaped the rewriting (exit status 125).",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Write a JSON report: syscalls by name, distinct sites, escapes, the view, "
            "missing files, refused writes, processes created.",
            show_default=False,
        ),
    ] = None,
    hooked: Annotated[
        Path | None,
        typer.Option(
            "--hooked",
            metavar="FILE",
            help="Run this rewritten main binary (APP.hooked, written beside the tar) "
            "the way LiteBox's runner does.",
            show_default=False,
        ),
    ] = None,
    host_fs: Annotated[
        bool,
        typer.Option(
            "--host-fs",
            help="Show the guest the host's file system (the bundle's files first, writes "
            "thrown away) instead of LiteBox's view of the bundle alone. For debugging.",
        ),
    ] = False,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            metavar="K=V",
            help="K=V for the guest's environment, which is exactly these (as LiteBox's "
            "runner does). Repeatable.",
            show_default=False,
        ),
    ] = None,
    bind: Annotated[
        list[str] | None,
        typer.Option(
            "--bind",
            metavar="HOST:GUEST",
            help="HOST:GUEST: show the host directory HOST at GUEST (writable). Repeatable.",
            show_default=False,
        ),
    ] = None,
    strict_files: Annotated[
        bool,
        typer.Option(
            "--strict-files",
            help="Stop at the first path the guest looks up that the bundle lacks and the host "
            "has (exit status 125).",
        ),
    ] = False,
) -> None:
    """Run PROGRAM from a bundle on this machine, every syscall through its trampoline.

    Usage: `run BUNDLE -- PROGRAM ARGS...` or `run --hooked APP.hooked BUNDLE.tar -- ARGS...`.

    The guest sees LiteBox's view: the bundle alone (tar_ro's files, a private writable /tmp,
    LiteBox's devices), uid/gid 1000, cwd /, the environment given with --env.

    The exit status is the program's own. A syscall that escaped the rewriting is reported,
    and with --strict it stops the program with status 125; a path the bundle lacks is
    reported, and with --strict-files it stops the program with status 125.
    """
    from .runtime.run import RunRequest, exit_like
    from .runtime.run import run as run_bundle

    binds = []
    for item in bind or []:
        host, sep, guest = item.partition(":")
        if not sep or not host or not guest:
            raise UserError(f"--bind {item!r}: expected HOST:GUEST")
        binds.append((host, guest))
    words = list(command or [])
    program = None if hooked is not None else (words.pop(0) if words else None)
    req = RunRequest(
        bundle=bundle,
        program=program,
        args=words,
        abi=abi,
        trace=trace,
        strict=strict,
        report=report,
        hooked=hooked,
        view="host-fs" if host_fs else "litebox",
        env=list(env or []),
        binds=binds,
        strict_files=strict_files,
    )
    raise typer.Exit(exit_like(run_bundle(req)))
