"""The ``litebox-pack`` command line.

Each command lives in its own module with a ``register(app)`` function; this module wires them
together and makes ``litebox-pack INPUT...`` mean ``litebox-pack pack INPUT...``. Start-up time is
paid on every invocation (``run`` in particular must start fast), so only what the invocation needs
is loaded: ``--version`` loads nothing but this module, the overall help lists the commands from
their one-line summaries here without importing them, and a command loads its own module only.
Shell completion (typer's) needs every command's options, so it loads them all.
"""

import importlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from . import __version__

if TYPE_CHECKING:
    import typer

# Command name -> module, in the order --help lists them.
COMMANDS = {
    "pack": "cmd_pack",
    "rewrite": "cmd_rewrite",
    "deps": "cmd_deps",
    "audit": "cmd_audit",
    "run": "cmd_run",
    "cache": "cmd_cache",
}
# The first line of each command's help, for the overall help (tests check they agree).
SUMMARIES = {
    "pack": "Package programs, their libraries and their loader into a tar LiteBox can mount.",
    "rewrite": "Rewrite every syscall of one ELF into a jump to a trampoline stub.",
    "deps": "Show which files ld.so would load for INPUT..., and the rule that found each one.",
    "audit": "Classify every file of a LiteBox bundle from its bytes.",
    "run": "Run PROGRAM from a bundle on this machine, every syscall through its trampoline.",
    "cache": "Show the cache of rewrite results and built runtimes: location, size, cap.",
}
HELP = (
    "Prepare Linux programs for LiteBox: resolve their libraries, rewrite every syscall into a "
    "trampoline jump, and stream the result into a tar LiteBox can mount.\n\n"
    "`litebox-pack ./app -o app.tar` is short for `litebox-pack pack ./app -o app.tar`. "
    "`litebox-pack help COMMAND` (or `COMMAND --help`) explains a command."
)
PROG = "litebox-pack"
COMPLETE_VAR = "_LITEBOX_PACK_COMPLETE"  # click's shell-completion variable for PROG


# No ``from __future__ import annotations`` here: the root callback's annotations must be
# evaluated where typer is imported (inside build_app), which keeps ``--version`` free of it.
def build_app(names: Iterable[str] = COMMANDS, *, stubs: bool = False) -> "typer.Typer":
    """The application with the given commands registered.

    With ``stubs`` each command is only its name and summary (enough for the overall help).
    """
    import typer

    def root(
        version: Annotated[
            bool,
            typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
        ] = False,
    ) -> None:
        """Prepare Linux programs for LiteBox."""

    app = typer.Typer(
        name=PROG,
        help=HELP,
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)  # a callback keeps typer in group mode even with one command
    for name in names:
        if stubs:
            app.command(name, help=SUMMARIES[name])(_stub)
        else:
            importlib.import_module(f"{__package__}.{COMMANDS[name]}").register(app)
    return app


def _stub() -> None:  # pragma: no cover - stubs are listed, never run
    raise AssertionError("a command stub was run")


def _version(value: bool) -> None:
    if value:
        import typer

        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


def __getattr__(name: str) -> Any:
    # ``packager.cli.app``: the full application, built on first use (tests drive it directly).
    if name == "app":
        return build_app()
    raise AttributeError(name)


def _command_names() -> set[str]:
    return set(COMMANDS) | {
        "--help",
        "-h",
        "--version",
        "--install-completion",
        "--show-completion",
    }


def _near_verb(word: str) -> str | None:
    """The command ``word`` is probably a typo of, when it names no file (``dep`` -> ``deps``)."""
    if word.startswith("-") or os.path.lexists(word):
        return None
    import difflib

    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    return close[0] if close else None


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every temporary file is cleaned up."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(COMPLETE_VAR):
        # Shell completion: click reads the words from the environment, not from ``args``.
        build_app()(prog_name=PROG)
        return
    if args[:1] == ["--version"]:
        print(f"{PROG} {__version__}")
        return
    if args and args[0] == "help":
        # ``help`` and ``help COMMAND``: what ``--help`` prints
        args = [*args[1:2], "--help"]
    if args and args[0] not in _command_names():
        verb = _near_verb(args[0])
        if verb is not None:
            hint = f"no command {args[0]!r} (did you mean {verb!r}?)"
            print(f"{PROG}: error: {hint}", file=sys.stderr)
            raise SystemExit(2)
        args.insert(0, "pack")
    one = args and args[0] in COMMANDS
    # Otherwise: the overall help, or an option of the root
    app = build_app([args[0]]) if one else build_app(stubs=True)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(args=args, prog_name=PROG)
    except Terminated:
        # Cleaned up on the way here; now die of SIGTERM, as the sender expects. Another thread
        # (a worker pool's) may take the signal, so wait for it rather than exit 0 meanwhile.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(128 + signal.SIGTERM)
