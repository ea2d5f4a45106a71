"""Which distribution package installed a file, read from a tree's own package databases.

Read without running any package manager, from the host's ``/`` or an image or ``--root`` tree:

* dpkg (Debian, Ubuntu): ``var/lib/dpkg/status`` (installed packages, versions, architectures)
  and ``var/lib/dpkg/info/PACKAGE[:ARCH].list`` (their files);
* apk (Alpine): ``lib/apk/db/installed`` (``P:``/``V:``/``A:`` per package, ``F:`` directories
  and ``R:`` files);
* rpm (Fedora, RHEL, SUSE): ``var/lib/rpm/rpmdb.sqlite``, the SQLite database of rpm 4.16 and
  later, whose ``Packages`` table holds each package's header (name, epoch, version, release,
  arch, and its files as dirnames/basenames/dirindexes). The older Berkeley DB and ndb formats
  are not read: their files are reported as owned by no package.

A database lists the path a package installed, which may cross a symlink (``/lib`` on a merged-
``/usr`` system), so a listed path owns a file when its directory, resolved inside the tree,
holds that very file.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .targetfs import confined_realpath

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_INFO = "var/lib/dpkg/info"
APK_INSTALLED = "lib/apk/db/installed"
RPM_SQLITE = "var/lib/rpm/rpmdb.sqlite"
MAX_DB_BYTES = 256 << 20  # a package database larger than this is not read


@dataclass(frozen=True, order=True)
class Package:
    kind: str  # purl type: "deb", "apk" or "rpm"
    namespace: str  # the distribution (os-release ID): "debian", "ubuntu", "alpine", "fedora"
    name: str
    version: str
    arch: str
    epoch: str = ""  # rpm's, a qualifier in package URLs (dpkg keeps it inside the version)

    @property
    def purl(self) -> str:
        """The package URL (github.com/package-url/purl-spec), e.g.
        ``pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64``."""
        safe = "+-._~:"
        out = f"pkg:{self.kind}/{quote(self.namespace, safe='')}/{quote(self.name, safe=safe)}"
        out += f"@{quote(self.version, safe=safe)}"
        qualifiers = [(k, v) for k, v in (("arch", self.arch), ("epoch", self.epoch)) if v]
        if qualifiers:
            out += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in qualifiers)
        return out


@dataclass
class Owners:
    """Owner of each asked-for file (by its path inside the tree), and the databases read."""

    packages: dict[str, Package]
    databases: list[str]


def find_owners(root: str, targets: Iterable[str]) -> Owners:
    """The package owning each of ``targets`` (absolute paths inside ``root``, real files)."""
    wanted: dict[str, dict[str, str]] = {}  # basename -> {host path: target}
    for t in targets:
        host = confined_realpath(root, t)
        wanted.setdefault(os.path.basename(host), {})[host] = t
    found: dict[str, Package] = {}
    databases: list[str] = []
    dirs: dict[str, str] = {}
    distro = _distro(root)
    names = {b.encode("utf-8", "surrogateescape") for b in wanted}
    for name, listing in (
        ("dpkg", _dpkg(root, distro or "debian", names)),
        ("apk", _apk(root, distro or "alpine")),
        ("rpm", _rpm(root, distro or "rpm")),
    ):
        if listing is None:
            continue
        databases.append(name)
        for path, pkg in listing:
            base = path.rsplit("/", 1)[-1]
            hosts = wanted.get(base)
            if not hosts:
                continue
            head = path.rsplit("/", 1)[0] or "/"
            hdir = dirs.get(head)
            if hdir is None:
                hdir = dirs[head] = confined_realpath(root, head)
            target = hosts.get(os.path.join(hdir, base))
            if target is not None and target not in found:
                found[target] = pkg
    return Owners(found, databases)


def _inside(root: str, rel: str) -> str:
    # Symlinks resolved inside the tree: an image's absolute link must not reach the host's files.
    return confined_realpath(root, "/" + rel)


def _read(root: str, rel: str) -> bytes | None:
    """A database file's bytes; None when absent, unreadable, not a regular file (a FIFO would
    block) or larger than MAX_DB_BYTES."""
    path = _inside(root, rel)
    try:
        with open(path, "rb", opener=_nonblocking) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DB_BYTES:
                return None
            return f.read(MAX_DB_BYTES)
    except OSError:
        return None


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def _distro(root: str) -> str | None:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        data = _read(root, rel)
        if data is None:
            continue
        for line in data.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ID":
                return value.strip().strip("\"'").lower() or None
    return None


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style stanzas (dpkg's status): continuation lines are skipped, not needed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


def _dpkg(root: str, distro: str, names: set[bytes]) -> list[tuple[str, Package]] | None:
    """Files of installed packages whose base name is one of ``names`` (dpkg's file lists are
    the bulk of the work: ~120k lines on a desktop, so they are filtered as bytes)."""
    status = _read(root, DPKG_STATUS)
    if status is None:
        return None
    by_list: dict[str, Package] = {}
    for p in _paragraphs(status.decode("utf-8", "replace")):
        name, state = p.get("Package"), p.get("Status", "").split()
        if not name or state[-1:] != ["installed"]:
            continue
        arch = p.get("Architecture", "")
        pkg = Package("deb", distro, name, p.get("Version", ""), arch)
        # A Multi-Arch: same package's file list is named PACKAGE:ARCH.list.
        by_list[name] = by_list.get(name) or pkg
        by_list[f"{name}:{arch}"] = pkg
    out: list[tuple[str, Package]] = []
    info = _inside(root, DPKG_INFO)
    try:
        lists = sorted(n for n in os.listdir(info) if n.endswith(".list"))
    except OSError:
        lists = []
    for entry in lists:
        owner = by_list.get(entry[: -len(".list")])
        data = _read(root, f"{DPKG_INFO}/{entry}") if owner else None
        if owner is None or data is None:
            continue
        for line in data.split(b"\n"):
            if line[line.rfind(b"/") + 1 :] in names:
                out.append((line.decode("utf-8", "surrogateescape"), owner))
    return out


def _apk(root: str, distro: str) -> list[tuple[str, Package]] | None:
    data = _read(root, APK_INSTALLED)
    if data is None:
        return None
    out: list[tuple[str, Package]] = []
    for stanza in data.decode("utf-8", "replace").split("\n\n"):
        fields: dict[str, str] = {}
        files: list[str] = []
        directory = ""
        for line in stanza.splitlines():
            key, _, value = line.partition(":")
            if key == "F":
                directory = value
            elif key == "R":
                files.append(f"/{directory}/{value}" if directory else f"/{value}")
            elif key in ("P", "V", "A"):
                fields[key] = value
        if "P" in fields:
            pkg = Package("apk", distro, fields["P"], fields.get("V", ""), fields.get("A", ""))
            out.extend((f, pkg) for f in files)
    return out


# rpm header tags (rpmtag.h) and their data types.
_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH = 1000, 1001, 1002, 1003, 1022
_DIRINDEXES, _BASENAMES, _DIRNAMES = 1116, 1117, 1118
_INT32, _STRING, _STRING_ARRAY, _I18NSTRING = 4, 6, 8, 9


def rpm_header_fields(blob: bytes) -> dict[int, list[str] | list[int]]:
    """The tags litebox-pack needs from one rpm header as rpmdb.sqlite stores it (the header
    structure without its 8-byte magic: entry count, data size, 16-byte entries, data)."""
    if len(blob) < 8:
        raise ValueError("header too short")
    count, size = struct.unpack_from(">II", blob, 0)
    start = 8 + 16 * count
    if start + size > len(blob):
        raise ValueError("header entries or data past its end")
    store = blob[start : start + size]
    out: dict[int, list[str] | list[int]] = {}
    wanted = {_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH, _DIRINDEXES, _BASENAMES, _DIRNAMES}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if tag not in wanted or not 0 <= offset <= len(store):
            continue
        if kind == _INT32:
            if offset + 4 * n > len(store):
                raise ValueError(f"tag {tag}: data past the header's end")
            out[tag] = list(struct.unpack_from(f">{n}i", store, offset))
        elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING):
            strings: list[str] = []
            pos = offset
            for _ in range(1 if kind == _STRING else n):
                end = store.find(b"\0", pos)
                if end < 0:
                    raise ValueError(f"tag {tag}: unterminated string")
                strings.append(store[pos:end].decode("utf-8", "replace"))
                pos = end + 1
            out[tag] = strings
    return out


def _rpm(root: str, distro: str) -> list[tuple[str, Package]] | None:
    path = _inside(root, RPM_SQLITE)
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DB_BYTES:
        return None
    out: list[tuple[str, Package]] = []
    try:
        # Read-only and immutable: never create a journal or touch the image's database.
        uri = Path(path).resolve().as_uri() + "?mode=ro&immutable=1"
        with sqlite3.connect(uri, uri=True) as db:
            rows = db.execute("SELECT blob FROM Packages ORDER BY hnum").fetchall()
    except sqlite3.Error:
        return None
    for (blob,) in rows:
        try:
            h = rpm_header_fields(bytes(blob))
        except ValueError:
            continue
        name = _first_str(h, _NAME)
        if name is None:
            continue
        epoch = h.get(_EPOCH)
        version = f"{_first_str(h, _VERSION) or ''}-{_first_str(h, _RELEASE) or ''}"
        arch = _first_str(h, _ARCH) or ""
        pkg = Package("rpm", distro, name, version, arch, str(epoch[0]) if epoch else "")
        dirnames, basenames = h.get(_DIRNAMES, []), h.get(_BASENAMES, [])
        index = h.get(_DIRINDEXES, [])
        for base, i in zip(basenames, index, strict=False):
            if isinstance(i, int) and 0 <= i < len(dirnames):
                out.append((f"{dirnames[i]}{base}", pkg))
    return out


def _first_str(h: dict[int, list[str] | list[int]], tag: int) -> str | None:
    values = h.get(tag)
    return values[0] if values and isinstance(values[0], str) else None
