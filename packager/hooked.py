"""The rewritten main binary written beside a bundle (``NAME.hooked``) and its pairing with it.

The file is named after the bundle, not after the input: ``-o h/red.tar`` writes ``h/red.hooked``
(a name without ``.tar`` gets ``.hooked`` appended), so two bundles of the same program in one
directory never share a ``.hooked``. The manifest records the sha256 of the main binary
(``main``), which lets ``run --hooked`` refuse a ``.hooked`` that belongs to another bundle and
lets ``pack`` say when it replaces one.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

from .errors import UserError

MANIFEST_PATH = "litebox/manifest.json"


def default_path(bundle: Path) -> Path:
    """``h/red.tar`` -> ``h/red.hooked``; ``h/red`` or ``h/red.img`` -> ``h/red.img.hooked``."""
    if bundle.suffix == ".tar":
        return bundle.with_suffix(".hooked")
    return bundle.with_name(bundle.name + ".hooked")


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def main_entry(manifest: dict[str, Any] | None) -> tuple[str, str | None] | None:
    """(tar path, sha256 of the rewritten bytes) of the bundle's main binary, from a manifest.

    ``main`` names it; manifests written before ``main`` existed give the first input entry
    (sha256_out, when recorded). None when the manifest names no main binary.
    """
    doc = manifest or {}
    main = doc.get("main")
    if isinstance(main, dict) and isinstance(main.get("path"), str):
        sha = main.get("sha256")
        return main["path"], sha if isinstance(sha, str) else None
    files = doc.get("files")
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        why = entry.get("included_because")
        paths = entry.get("paths")
        is_input = isinstance(why, list) and {"kind": "input"} in why
        if is_input and isinstance(paths, list) and paths and isinstance(paths[0], str):
            sha = entry.get("sha256_out")
            return paths[0], sha if isinstance(sha, str) else None
    return None


def check_matches(hooked: Path, bundle: Path, manifest: dict[str, Any] | None) -> None:
    """Refuse ``hooked`` unless its bytes are the main binary the manifest records.

    A bundle whose manifest records no sha256 (another packager's, or none) is not checked.
    """
    path, want = main_entry(manifest) or ("", None)
    if want is None:
        return
    got = file_sha256(hooked)
    if got != want:
        raise UserError(
            f"{hooked}: not the main binary of {bundle} (sha256 {got[:12]}…, the manifest "
            f"records {want[:12]}… for /{path.lstrip('/')}); use the .hooked written with it"
        )


def replaces_foreign(hooked: Path, bundle: Path) -> bool:
    """True when writing ``hooked`` replaces a file that is not ``bundle``'s own main binary
    (a ``.hooked`` of another bundle, or any other file)."""
    if not hooked.is_file():
        return hooked.exists()
    try:
        with tarfile.open(bundle) as tf:
            member = tf.extractfile(MANIFEST_PATH)
            doc = json.loads(member.read()) if member else None
    except (OSError, KeyError, tarfile.TarError, ValueError):
        return True
    main = main_entry(doc if isinstance(doc, dict) else None)
    return main is None or main[1] != file_sha256(hooked)
