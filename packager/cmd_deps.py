"""``litebox-pack deps``: print the library closure the packager would bundle. Writes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from .console import PATH_ARG, help_text, print_json, user_errors
from .resolve import Closure, Library, resolve
from .schemas import FORMAT


def register(app: typer.Typer) -> None:
    app.command("deps", help=help_text(deps.__doc__))(deps)


def split_library_path(spec: str | None) -> list[str]:
    """``--library-path`` as LD_LIBRARY_PATH: ":" or ";" separated, empty means none."""
    if not spec:
        return []
    return re.split(r"[:;]", spec)


def _label(lib: Library) -> str:
    head = lib.path if lib.name == lib.path else f"{lib.name} => {lib.path}"
    return f"{head} [{lib.rule}]"


Children = dict[str, list[tuple[str, Library | None]]]


def _branches(
    closure: Closure, children: Children, shown: set[str], path: str, prefix: str
) -> Iterator[str]:
    kids = children.get(path, [])
    for i, (name, lib) in enumerate(kids):
        branch, indent = ("└── ", "    ") if i == len(kids) - 1 else ("├── ", "│   ")
        if lib is None:
            reason = closure.reasons.get((name, path), "not found")
            yield f"{prefix}{branch}{name} => {reason}"
            for a in closure.tried.get((name, path), []):  # where ld.so looked, like libtree
                yield f"{prefix}{indent}  tried {a.path} [{a.rule}]: {a.result}"
        elif lib.path not in shown:
            shown.add(lib.path)
            yield prefix + branch + _label(lib)
            yield from _branches(closure, children, shown, lib.path, prefix + indent)


def tree_lines(closure: Closure) -> Iterator[str]:
    """Each input, then every object under the one that first needed it (like lddtree)."""
    for inp, own in zip(closure.inputs, closure.by_input, strict=True):
        children: Children = {}
        for lib in own.libraries:
            if lib.needed_by is not None:
                children.setdefault(lib.needed_by, []).append((lib.name, lib))
        for name, by in own.missing:
            children.setdefault(by, []).append((name, None))
        yield inp.path if inp.name == inp.path else f"{inp.name} ({inp.path})"
        yield from _branches(closure, children, {inp.path}, inp.path, "")


@user_errors
def deps(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Programs, libraries or scripts.",
            metavar="INPUT...",
            click_type=PATH_ARG,
            show_default=False,
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            metavar="DIR",
            readable=False,
            help="Resolve everything inside DIR (a sysroot or rootfs).",
        ),
    ] = None,
    library_path: Annotated[
        str | None,
        typer.Option(
            "--library-path",
            metavar="DIRS",
            help="Colon-separated directories searched like LD_LIBRARY_PATH.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the closure as JSON.")] = False,
) -> None:
    """Show which files ld.so would load for INPUT..., and the rule that found each one.

    Nothing is executed and nothing is written. Exits 1 when a library cannot be found.
    """
    closure = resolve(
        [str(p) for p in inputs],
        root=str(root) if root is not None else None,
        library_path=split_library_path(library_path),
    )
    if json_out:
        print_json({"format": FORMAT["deps"], **closure.to_json()})
    else:
        for line in tree_lines(closure):
            typer.echo(line)
    closure.raise_if_missing()
