"""The ``litebox-pack`` command line.

Each command lives in its own module and registers itself on ``app``; this module only wires
them together and makes ``litebox-pack INPUT...`` mean ``litebox-pack pack INPUT...``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import __version__, cmd_audit, cmd_deps, cmd_pack, cmd_rewrite, cmd_run

app = typer.Typer(
    name="litebox-pack",
    help=(
        "Prepare Linux programs for LiteBox: resolve their libraries, rewrite every syscall "
        "into a trampoline jump, and stream the result into a tar LiteBox can mount.\n\n"
        "`litebox-pack ./app -o app.tar` is short for `litebox-pack pack ./app -o app.tar`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"litebox-pack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Prepare Linux programs for LiteBox."""


for module in (cmd_pack, cmd_rewrite, cmd_deps, cmd_audit, cmd_run):
    module.register(app)


def _command_names() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return names | {"--help", "-h", "--version"}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in _command_names() and "pack" in _command_names():
        args.insert(0, "pack")
    app(args=args, prog_name="litebox-pack")
