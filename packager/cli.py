"""The ``litebox-pack`` command line.

Each command lives in its own module with a ``register(app)`` function; this module wires them
together and makes ``litebox-pack INPUT...`` mean ``litebox-pack pack INPUT...``. A command's
module (and whatever it imports) is loaded only when that command runs, or for the overall
help: start-up time is paid on every invocation, and ``run`` in particular must start fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from . import __version__

# Command name -> module, in the order --help lists them.
COMMANDS = {
    "pack": "cmd_pack",
    "rewrite": "cmd_rewrite",
    "deps": "cmd_deps",
    "audit": "cmd_audit",
    "run": "cmd_run",
    "cache": "cmd_cache",
}
HELP = (
    "Prepare Linux programs for LiteBox: resolve their libraries, rewrite every syscall into a "
    "trampoline jump, and stream the result into a tar LiteBox can mount.\n\n"
    "`litebox-pack ./app -o app.tar` is short for `litebox-pack pack ./app -o app.tar`."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"litebox-pack {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Prepare Linux programs for LiteBox."""


def build_app(names: Iterable[str] = COMMANDS) -> typer.Typer:
    """The application with the given commands registered."""
    app = typer.Typer(
        name="litebox-pack",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)  # a callback keeps typer in group mode even with one command
    for name in names:
        importlib.import_module(f"{__package__}.{COMMANDS[name]}").register(app)
    return app


def __getattr__(name: str) -> Any:
    # ``packager.cli.app``: the full application, built on first use (tests drive it directly).
    if name == "app":
        return build_app()
    raise AttributeError(name)


def _command_names() -> set[str]:
    return set(COMMANDS) | {"--help", "-h", "--version"}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in _command_names():
        args.insert(0, "pack")
    names = [args[0]] if args and args[0] in COMMANDS else list(COMMANDS)
    build_app(names)(args=args, prog_name="litebox-pack")
