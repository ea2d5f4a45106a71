"""Output helpers shared by the commands: one-line errors, JSON, the rich consoles."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from typer._click import types as click_types  # typer < 0.28 carries its own click
from typer.models import TyperPath

from rewriter import RewriteError

from .errors import UserError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

P = ParamSpec("P")
R = TypeVar("R")

# Width for output that is not a terminal (a pipe, a CI log): wide enough that no line is ever
# wrapped or cut to a guessed 80 columns; tables stay as wide as their content.
PIPE_WIDTH = 100_000
_consoles: dict[bool, Console] = {}


def console(err: bool = False) -> Console:
    """The rich console for stdout (or stderr): on a terminal its width; elsewhere unwrapped."""
    if err not in _consoles:
        from rich.console import Console  # only commands that draw tables pay for rich

        c = Console(stderr=err, highlight=False)
        if not c.is_terminal:
            c = Console(stderr=err, highlight=False, width=PIPE_WIDTH)
        _consoles[err] = c
    return _consoles[err]


def __getattr__(name: str) -> Any:
    # ``console.stderr``: the stderr console, made on first use.
    if name == "stderr":
        return console(err=True)
    raise AttributeError(name)


def progress_bar(*columns: Any) -> Progress | None:
    """A started rich progress bar on stderr with ``columns``, or None when stderr is not a
    terminal (pipes and CI logs get the summary only). The caller stops it."""
    if not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(*columns, console=console(err=True), transient=True)
    bar.start()
    return bar


def help_text(doc: str | None) -> str:
    """A docstring as command help: paragraphs kept, the lines of each joined into one.

    typer's rich help keeps a docstring's line breaks, which would break sentences mid-way.
    """
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


class _PathArg(TyperPath):
    """An argument's path type without the ``<path>`` column in the help: the placeholder
    (INPUT, BUNDLE) says it; shells still complete file names."""

    def get_metavar(self, param: Any, ctx: Any) -> str:
        return ""


class _TextArg(click_types.StringParamType):
    def get_metavar(self, param: Any, ctx: Any) -> str:
        return ""


# Not readable-checked: an unreadable input gets our one-line error naming it, not click's.
PATH_ARG = _PathArg(readable=False)
TEXT_ARG = _TextArg()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``litebox-pack: error: message`` on stderr and return the Exit to raise."""
    print(f"litebox-pack: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def warn(message: str) -> None:
    print(f"litebox-pack: warning: {message}", file=sys.stderr)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn UserError and RewriteError into one line on stderr and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise fail(str(e), e.exit_code) from None
        except RewriteError as e:
            raise fail(str(e)) from None

    return wrapper


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
