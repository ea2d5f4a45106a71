"""The one JSON reader for every JSON document litebox-pack reads: bounded in size, nesting and
number length, every failure a one-line UserError naming the document.

Manifests, indexes, image configs, ``docker save``'s manifest.json, bundle manifests, cache
metadata and Docker's config.json all come from somewhere the user may not control. Python's
``json`` would hold a document of any size, recurse until RecursionError on ``[[[[...`` and
raise ValueError on a number of 5,000 digits; none of that may surface as a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import UserError
from .limits import MAX_JSON

__all__ = ["MAX_JSON", "load_object", "loads"]
MAX_DEPTH = 64  # arrays/objects inside each other; real manifests and configs use < 10
MAX_NUMBER = 64  # characters of one number literal (a sha256 in decimal has 78; none occur)


class _Refused(ValueError):
    pass


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER:
        raise _Refused(f"a number of {len(text)} digits (limit {MAX_NUMBER})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER:
        raise _Refused(f"a number of {len(text)} characters (limit {MAX_NUMBER})")
    return float(text)


def _constant(text: str) -> Any:
    raise _Refused(f"{text} is not JSON")


def _depth_ok(doc: Any) -> bool:
    """Is every container at most MAX_DEPTH deep? (Iterative: the check itself cannot recurse.)"""
    todo: list[tuple[Any, int]] = [(doc, 1)]
    while todo:
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                return False
            todo.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def loads(data: bytes, what: str, *, limit: int | None = None) -> Any:
    """Parse ``data`` (at most ``limit`` bytes, default MAX_JSON) as UTF-8 JSON."""
    bound = MAX_JSON if limit is None else limit
    if len(data) > bound:
        raise UserError(f"{what}: {len(data)} bytes, larger than the {bound}-byte JSON limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what}: not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        doc = None
        ok = False
    except ValueError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{what}: not valid JSON ({first})") from None
    else:
        ok = _depth_ok(doc)
    if not ok:
        raise UserError(f"{what}: nested deeper than {MAX_DEPTH} levels")
    return doc


def load_object(data: bytes, what: str, *, limit: int | None = None) -> dict[str, Any]:
    """:func:`loads`, and the document must be a JSON object."""
    doc = loads(data, what, limit=limit)
    if not isinstance(doc, dict):
        raise UserError(f"{what}: not a JSON object")
    return doc
