"""Output helpers shared by the commands: one-line errors, JSON, stderr console."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from rewriter import RewriteError

from .errors import UserError

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True, highlight=False)


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
