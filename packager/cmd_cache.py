"""``litebox-pack cache``: where the cache is and how big; ``prune`` to a size; ``clear``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .cache import cache_root
from .cache_limit import (
    MAX_SIZE_ENV,
    entries,
    format_size,
    max_size,
    parse_size,
    prune,
    total_size,
)
from .console import print_json, user_errors
from .errors import UsageError, UserError
from .schemas import FORMAT


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="cache",
        help=(
            "Show the cache of rewrite results and built runtimes: location, size, cap. "
            "`cache prune` removes least recently used entries down to a size; `cache clear` "
            "removes everything."
        ),
        invoke_without_command=True,
        no_args_is_help=False,
    )
    group.callback()(show)
    group.command("prune")(prune_cmd)
    group.command("clear")(clear)
    app.add_typer(group)


def _status(root: Path) -> dict[str, Any]:
    found = entries(root)
    cap = max_size()
    return {
        "format": FORMAT["cache"],
        "location": str(root),
        "size": total_size(found),
        "entries": len(found),
        "max_size": cap,
    }


@user_errors
def show(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the cache of rewrite results and built runtimes: location, size, cap."""
    if ctx.invoked_subcommand is not None:
        return
    root = cache_root()
    status = _status(root)
    if json_out:
        print_json(status)
        return
    cap = status["max_size"]
    typer.echo(f"location: {root}")
    typer.echo(f"size: {format_size(status['size'])} in {_entries(status['entries'])}")
    typer.echo(
        f"cap: {format_size(cap)} (least recently used entries go first; {MAX_SIZE_ENV} sets it)"
        if cap is not None
        else f"cap: none ({MAX_SIZE_ENV}=0)"
    )


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _prune(root: Path, limit: int) -> tuple[int, int]:
    try:
        return prune(root, limit)
    except OSError as e:
        raise UserError(f"{e.filename or root}: cannot remove: {e.strerror or e}") from None


@user_errors
def prune_cmd(
    max_size_text: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Keep at most SIZE (500M, 2G, 1.5GiB, bytes); default: the cap.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Remove least recently used cache entries until the cache holds at most SIZE."""
    if max_size_text is None:
        limit = max_size()
    else:
        try:
            limit = parse_size(max_size_text)
        except UsageError as e:
            raise UsageError(f"--max-size {e}") from None
    if limit is None:
        raise UserError(f"no cap is set ({MAX_SIZE_ENV}=0): give --max-size")
    root = cache_root()
    removed, freed = _prune(root, limit)
    left = total_size(entries(root))
    typer.echo(f"removed {_entries(removed)} ({format_size(freed)}); {format_size(left)} left")


@user_errors
def clear() -> None:
    """Remove every cache entry."""
    root = cache_root()
    removed, freed = _prune(root, 0)
    typer.echo(f"removed {_entries(removed)} ({format_size(freed)}) from {root}")
