"""``litebox/sbom.cdx.json``: a CycloneDX 1.6 SBOM of the bundle, as auditwheel writes for what
it grafts.

Each distribution package that provides a bundled file is a component (with its package URL),
and the files it provides are its nested ``file`` components; files no package owns (the
user's own programs, files the tool generates, ``--include``s from outside the tree) are
top-level ``file`` components marked ``litebox-pack:package = none``. A file component is named
by its first tar path and carries the bundled bytes' SHA-256 (the source's, before rewriting, is
a property). Nothing in it depends on the time or on chance: the serial number is derived from
the content, so the same bundle gives the same SBOM.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

from . import __version__
from .packagedb import Owners, Package, find_owners

SBOM_PATH = "litebox/sbom.cdx.json"
SPEC_VERSION = "1.6"
NO_PACKAGE = "none"


def target_of(source: str | None, root: str) -> str | None:
    """The path inside ``root`` of a bundled file's source, or None when it lies outside."""
    if source is None:
        return None
    rel = os.path.relpath(source, root)
    if rel == "." or rel == ".." or rel.startswith("../"):
        return None
    return "/" + rel


def build_sbom(subject: str, files: Sequence[dict[str, Any]], root: str | None) -> bytes:
    """The SBOM of a bundle whose manifest lists ``files``; sources inside ``root`` (the tree
    whose package databases describe them; None: no database) are matched to packages.
    ``subject`` names the bundle by what it holds (its main program), not by its file name, so
    the same content gives the same SBOM wherever it is written."""
    targets = {}
    if root is not None:
        for f in files:
            t = target_of(f["source"], root)
            if t is not None:
                targets[f["paths"][0]] = t
    owners = find_owners(root, targets.values()) if root is not None else Owners({}, [])
    by_package: dict[Package, list[dict[str, Any]]] = {}
    unowned: list[dict[str, Any]] = []
    for f in files:
        pkg = owners.packages.get(targets.get(f["paths"][0], ""))
        component = _file_component(f, pkg)
        if pkg is None:
            unowned.append(component)
        else:
            by_package.setdefault(pkg, []).append(component)
    components: list[dict[str, Any]] = [
        {
            "type": "library",
            "bom-ref": pkg.purl,
            "name": pkg.name,
            "version": pkg.version,
            "purl": pkg.purl,
            "components": sorted(members, key=_by_name),
        }
        for pkg, members in sorted(by_package.items(), key=lambda kv: kv[0].purl)
    ]
    components.extend(sorted(unowned, key=_by_name))
    doc: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": "",
        "version": 1,
        "metadata": {
            "tools": {
                "components": [
                    {"type": "application", "name": "litebox-pack", "version": __version__}
                ]
            },
            "component": {"type": "application", "bom-ref": "bundle", "name": subject},
            "properties": [
                {"name": "litebox-pack:package-databases", "value": db}
                for db in owners.databases or [NO_PACKAGE]
            ],
        },
        "components": components,
    }
    # The serial number names this BOM; derived from everything else, it is the same for the
    # same content (CycloneDX asks for an RFC 4122 URN).
    digest = hashlib.sha256(_dump(doc)).digest()
    doc["serialNumber"] = uuid.UUID(bytes=digest[:16], version=5).urn
    return _dump(doc)


def _by_name(component: dict[str, Any]) -> str:
    return str(component["name"])


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def _file_component(f: dict[str, Any], pkg: Package | None) -> dict[str, Any]:
    name = "/" + f["paths"][0]
    props = [{"name": "litebox-pack:path", "value": "/" + p} for p in f["paths"][1:]]
    props.append({"name": "litebox-pack:package", "value": pkg.purl if pkg else NO_PACKAGE})
    if f["sha256_in"] != f["sha256_out"]:
        props.append({"name": "litebox-pack:source-sha256", "value": f["sha256_in"]})
    return {
        "type": "file",
        "bom-ref": "file:" + name,
        "name": name,
        "hashes": [{"alg": "SHA-256", "content": f["sha256_out"]}],
        "properties": props,
    }


def packages_of(data: bytes) -> list[dict[str, Any]]:
    """What ``audit`` shows of a bundle's SBOM: each package with its purl and file count, then
    the files no package owns (``purl`` None). Raises ValueError for a document it cannot read."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise ValueError("not a CycloneDX document")
    out: list[dict[str, Any]] = []
    unowned: list[str] = []
    for c in doc.get("components") or []:
        if not isinstance(c, dict):
            continue
        if c.get("type") == "file":
            unowned.append(str(c.get("name")))
        else:
            files = [str(m.get("name")) for m in c.get("components") or [] if isinstance(m, dict)]
            out.append(
                {
                    "name": str(c.get("name")),
                    "version": str(c.get("version", "")),
                    "purl": c.get("purl"),
                    "files": files,
                }
            )
    if unowned:
        out.append({"name": None, "version": None, "purl": None, "files": unowned})
    return out
